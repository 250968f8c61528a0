struct cmd {
    const char *name;
    int (*fn)(int);
};

#define CMD(n, f) \
    static const struct cmd cmd_##n __attribute__((used, section("cmds"), aligned(sizeof(void *)))) = {#n, f}
