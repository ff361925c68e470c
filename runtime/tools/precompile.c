/* Build tool: compiles a Lua source file to bytecode with the same Lua library the runtime
 * links, keeping debug information so tracebacks still name files and lines.
 * Usage: precompile CHUNKNAME IN.lua OUT.luac */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>

static int writer(lua_State *L, const void *p, size_t n, void *ud)
{
    (void)L;
    return fwrite(p, 1, n, ud) == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: precompile CHUNKNAME IN.lua OUT.luac\n");
        return 2;
    }
    lua_State *L = luaL_newstate();
    FILE *in = fopen(argv[2], "rb");
    if (in == NULL) {
        perror(argv[2]);
        return 1;
    }
    static char src[1 << 20];
    size_t n = fread(src, 1, sizeof(src), in);
    fclose(in);
    if (n == sizeof(src)) {
        fprintf(stderr, "%s: too large\n", argv[2]);
        return 1;
    }
    if (luaL_loadbufferx(L, src, n, argv[1], "t") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    FILE *out = fopen(argv[3], "wb");
    if (out == NULL || lua_dump(L, writer, out, 0) != 0 || fclose(out) != 0) {
        perror(argv[3]);
        return 1;
    }
    lua_close(L);
    return 0;
}
