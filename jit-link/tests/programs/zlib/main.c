/* Uses zlib, which a native link takes from -lz: under orcjit link, without --dlopen of
 * libz, the undefined-symbol error notes which library defines the name. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void) {
    const char *text = "orcjit orcjit orcjit orcjit orcjit orcjit orcjit orcjit";
    unsigned char packed[256], unpacked[256];
    uLongf packed_len = sizeof packed, unpacked_len = sizeof unpacked;
    if (compress(packed, &packed_len, (const unsigned char *)text, strlen(text)) != Z_OK) return 1;
    if (uncompress(unpacked, &unpacked_len, packed, packed_len) != Z_OK) return 2;
    printf("zlib %s: %zu -> %lu -> %lu bytes, same %d\n", zlibVersion() ? "present" : "absent", strlen(text),
           (unsigned long)packed_len, (unsigned long)unpacked_len, memcmp(text, unpacked, unpacked_len) == 0);
    return 0;
}
