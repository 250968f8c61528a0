struct Entry {
  const char *name;
  Entry *next;
};
extern Entry *registry_head;
struct Registrar {
  Entry entry;
  explicit Registrar(const char *name) : entry{name, registry_head} { registry_head = &entry; }
};
