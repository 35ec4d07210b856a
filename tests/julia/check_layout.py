"""Julia's FlashJIT mirrors flashjit.h: the same fields, in the same order,
at the same offsets and sizes, and the same constants, for each struct it
mirrors (ForwardArgs, and BackwardArgs holding a ForwardArgs inline). No
Julia runs here: the mirror's layout is computed from its declarations by
the C rules that Julia applies to isbits fields, and compared with what a C
compiler made of the header (abi_layout). abi_layout's own field lists are
checked to cover each struct: no gap between fields beyond alignment
padding, nothing after the last.

    python3 check_layout.py <abi_layout binary> <FlashJIT.jl>
"""

import re
import subprocess
import sys

# Julia type -> (size, alignment) on x86-64 / aarch64 Linux.
SCALARS = {
    "UInt64": (8, 8), "Int64": (8, 8), "Float64": (8, 8), "Int32": (4, 4),
    "UInt32": (4, 4), "Cint": (4, 4), "Cfloat": (4, 4), "Float32": (4, 4),
    "Cstring": (8, 8),
}


# The mirrored structs: Julia name -> C name.
STRUCTS = {"ForwardArgs": "flashjit_forward_args", "BackwardArgs": "flashjit_backward_args"}


def julia_type(t: str, structs=None):
    if t in SCALARS:
        return SCALARS[t]
    if structs and t in structs:  # an isbits struct field is stored inline
        return structs[t]
    if re.fullmatch(r"Ptr\{.*\}", t):
        return 8, 8
    m = re.fullmatch(r"NTuple\{(\d+),\s*(\w+)\}", t)
    if m:
        size, align = julia_type(m.group(2))
        return int(m.group(1)) * size, align
    raise ValueError(f"no layout rule for Julia type {t}")


def julia_struct(source: str, name: str, structs=None):
    """[(field, offset, size)] and (sizeof, alignment) of `struct name`;
    `structs` gives (sizeof, alignment) of the structs it may hold."""
    m = re.search(rf"^struct {name}\n(.*?)^end", source, re.S | re.M)
    if not m:
        raise ValueError(f"no immutable struct {name} in the Julia source (C holds "
                         "structs inline; a Julia mutable struct field would be a pointer)")
    fields, offset, max_align = [], 0, 1
    for line in m.group(1).splitlines():
        f = re.fullmatch(r"\s*(\w+)::(.+?)\s*", line)
        if not f:
            continue  # constructors, comments
        size, align = julia_type(f.group(2), structs)
        offset = -(-offset // align) * align
        fields.append((f.group(1), offset, size))
        offset += size
        max_align = max(max_align, align)
    return fields, (-(-offset // max_align) * max_align, max_align)


def main(layout_binary: str, julia_file: str) -> int:
    out = subprocess.run([layout_binary], check=True, capture_output=True,
                         text=True).stdout.split("\n")
    c_fields, c_consts, c_sizes = {}, {}, {}
    for line in filter(None, out):
        kind, *rest = line.split()
        if kind == "field":
            c_fields.setdefault(rest[0], []).append(
                (rest[1], int(rest[2]), int(rest[3]), int(rest[4])))
        elif kind == "sizeof":
            c_sizes[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "const":
            c_consts[rest[0]] = int(rest[1])
    errors = []
    source = open(julia_file).read()
    j_sizes = {}
    for j_name, c_name in STRUCTS.items():
        fields, c_size = c_fields.get(c_name, []), c_sizes.get(c_name)
        if not fields or c_size is None:
            errors.append(f"abi_layout.c prints no {c_name}")
            continue
        # abi_layout lists every field: consecutive, padded only to alignment.
        end = 0
        for name, offset, size, align in fields:
            if offset != -(-end // align) * align:
                errors.append(f"abi_layout.c misses a field of {c_name} before {name} "
                              f"(offset {offset}, expected {end} padded to {align})")
            end = offset + size
        if -(-end // c_size[1]) * c_size[1] != c_size[0]:
            errors.append(f"abi_layout.c misses fields of {c_name} after {fields[-1][0]} "
                          f"(sizeof is {c_size[0]})")
        try:
            j_fields, j_sizes[j_name] = julia_struct(source, j_name, j_sizes)
        except ValueError as e:
            errors.append(str(e))
            continue
        if [f[0] for f in j_fields] != [f[0] for f in fields]:
            errors.append(f"{j_name}: field names or order differ:\n  C:     "
                          + " ".join(f[0] for f in fields) + "\n  Julia: "
                          + " ".join(f[0] for f in j_fields))
        for (name, offset, size), (_, c_offset, c_sz, _) in zip(j_fields, fields):
            if (offset, size) != (c_offset, c_sz):
                errors.append(f"{j_name}.{name}: Julia offset {offset} size {size}, "
                              f"C offset {c_offset} size {c_sz}")
        if j_sizes[j_name] != c_size:
            errors.append(f"sizeof {j_name}: Julia {j_sizes[j_name]}, C {c_size}")
    j_consts = {n: int(v) for n, v in re.findall(
        r"^const (FLASHJIT_\w+) = (?:Int32\()?(-?\d+)\)?", source, re.M)}
    for name, value in j_consts.items():
        if c_consts.get(name) != value:
            errors.append(f"{name}: Julia {value}, C {c_consts.get(name)}")
    if not j_consts:
        errors.append("no FLASHJIT_ constants found in the Julia source")
    if errors:
        print("\n".join(errors))
        return 1
    print("; ".join(f"FlashJIT.{j} matches {c}: {len(c_fields[c])} fields, {c_sizes[c][0]} bytes"
                    for j, c in STRUCTS.items())
          + f"; {len(j_consts)} constants match")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
