#!/usr/bin/env bash
# Session 10, call 1: probe the JIT's options (driver cuLink and ptxas
# --Ofast-compile) for compile time and registers on the PTX of HEAD.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"; s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; nproc; uptime; which ptxas nvcc; ptxas --version | tail -2; ls /usr/local/cuda*/lib64 2>/dev/null | grep -i ptxcomp; find / -name "libnvptxcompiler*" 2>/dev/null | head -3; } > "$s" 2>&1
cd .device/probe
g++ -O2 -o /tmp/probe probe.cpp -I/usr/local/cuda/include -L/usr/local/cuda/lib64/stubs -lcuda >> "$s" 2>&1 || nvcc -o /tmp/probe probe.cpp -lcuda >> "$s" 2>&1
/tmp/probe k*_causal.ptx k64_none.ptx k160_none.ptx >> "$s" 2>&1
TIMEFORMAT=%R
echo "== ptxas wall s (3 runs) and registers" >> "$s"
for f in k*.ptx; do for o in "" "--Ofast-compile min" "--Ofast-compile mid" "--Ofast-compile max"; do
  t=""; for r in 1 2 3; do a=$( { time ptxas -arch=sm_90a $o $f -o /tmp/x.cubin 2>/dev/null; } 2>&1 ); t="$t $a"; done
  echo "$f [$o]:$t $(ptxas -arch=sm_90a -v $o $f -o /tmp/x.cubin 2>&1 | grep -o 'Used [0-9]* registers')" >> "$s"
done; done
uptime >> "$s"
cat "$s"
