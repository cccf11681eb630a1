#!/usr/bin/env python3
"""mkstub.py REAL_LIB OUT_DIR: a stand-in shared library with REAL_LIB's soname, versions and
exported symbols; every function aborts with a message naming itself. For libraries that a kept
library links (libavcodec's optional codecs) but that this bundle's work never calls."""
import os, re, subprocess, sys, tempfile

real, out_dir = sys.argv[1], sys.argv[2]
dyn = subprocess.run(["readelf", "-dW", real], capture_output=True, text=True, check=True).stdout
soname = re.search(r"\(SONAME\)\s+Library soname: \[(.+)\]", dyn).group(1)
syms = subprocess.run(["readelf", "--dyn-syms", "-W", real], capture_output=True, text=True, check=True).stdout
c, versions, n = [], {}, 0
lib = os.path.basename(real)
c.append('#include <stdio.h>\n#include <stdlib.h>\n')
c.append(f'static void stub_fail(const char *s) {{ fprintf(stderr, "bundle stub: %s of {lib} was called\\n", s); abort(); }}\n')
ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
seen = set()
for line in syms.splitlines():
    f = line.split()
    if len(f) < 8 or not f[0].endswith(":") or f[6] == "UND" or f[4] not in ("GLOBAL", "WEAK"):
        continue
    typ, size, name = f[3], int(f[2], 0) if f[2].startswith("0x") else int(f[2]), f[7]
    if f[6] == "ABS":
        if ver_name := (name.split("@")[-1] if "@" in name else name):
            versions.setdefault(ver_name, [])
        continue
    if typ in ("SECTION", "FILE"):
        continue
    base, ver, default = name, None, True
    if "@@" in name:
        base, ver = name.split("@@")
    elif "@" in name:
        base, ver = name.split("@"); default = False
    if base == ver and size == 0 and typ == "OBJECT":
        versions.setdefault(ver, []); continue  # the version definition symbol itself
    if not ident.match(base) or (base, ver) in seen:
        continue
    seen.add((base, ver)); n += 1
    impl = f"stub_{n}"
    if typ in ("FUNC", "IFUNC", "NOTYPE"):
        c.append(f'void {impl}(void) {{ stub_fail("{base}"); }}\n')
    elif typ == "TLS":
        c.append(f'__thread char {impl}[{max(size, 1)}] __attribute__((aligned(16)));\n')
    else:
        c.append(f'char {impl}[{max(size, 1)}] __attribute__((aligned(16)));\n')
    if ver:
        versions.setdefault(ver, [])
        c.append(f'__asm__(".symver {impl}, {base}{"@@" if default else "@"}{ver}");\n')
    else:
        c.append(f'__asm__(".globl {base}\\n.set {base}, {impl}");\n')
        if typ in ("OBJECT", "TLS"):
            c[-1] = f'__asm__(".globl {base}\\n.type {base}, @{"object" if typ == "OBJECT" else "tls_object"}\\n.set {base}, {impl}\\n.size {base}, {max(size, 1)}");\n'
        elif typ in ("FUNC", "IFUNC", "NOTYPE"):
            c[-1] = f'__asm__(".globl {base}\\n.type {base}, @function\\n.set {base}, {impl}");\n'
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "stub.c"); open(src, "w").write("".join(c))
    args = ["gcc", "-shared", "-fPIC", "-O0", "-o", os.path.join(out_dir, soname), src, f"-Wl,-soname,{soname}"]
    if versions:
        # Version nodes in the real library's order (verdef), each inheriting nothing.
        vd = subprocess.run(["readelf", "-VW", real], capture_output=True, text=True).stdout
        order = []
        for m in re.finditer(r"Name: (\S+)", vd.split("Version needs section")[0]):
            if m.group(1) in versions and m.group(1) not in order:
                order.append(m.group(1))
        order += [v for v in versions if v not in order]
        script = os.path.join(tmp, "vers")
        body = "".join(f"{v} {{ {'local: stub_*; ' if i == 0 else ''}}};\n" for i, v in enumerate(order))
        open(script, "w").write(body)
        args.append(f"-Wl,--version-script={script}")
    else:
        pass
    subprocess.run(args, check=True)
print(f"{soname}: {n} symbols, {len(versions)} versions")
