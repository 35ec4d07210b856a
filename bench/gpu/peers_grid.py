"""The peers of .device/peers_bench.py on issue 19's grid: every head dim,
sequence length and dtype (peers_bench.py itself times bf16 only).

Each case is peers_bench.run_case (PyTorch SDPA's FlashAttention-2, cuDNN and
memory-efficient backends, FlexAttention) at 16k tokens (batch 16384 / S) and
2048 / D heads, as run-device.sh's grid mode times flashjit. FlexAttention
compiles per shape, so it runs only at FLEX_DIMS (where the SDPA backends
refuse or trail it). Rows go to stdout and, tagged with their dtype, to
$PEERS_OUT/peers-grid.jsonl.
"""
import importlib.util
import json
import os

import torch

path = os.environ.get("PEERS_BENCH", ".device/peers_bench.py")
spec = importlib.util.spec_from_file_location("peers_bench", path)
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)

ints = lambda name, default: [int(x) for x in os.environ.get(name, default).replace(",", " ").split()]
# run-device.sh sets the grid (its GRID_* defaults); alone, D = 128 at 4096.
dims = ints("GRID_DIMS", "128")
seqs = ints("GRID_SEQS", "4096")
flexDims = set(ints("FLEX_DIMS", "100"))
dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
names = os.environ.get("GRID_DTYPES", "bf16").split()
out = os.path.join(os.environ.get("PEERS_OUT", "/tmp"), "peers-grid.jsonl")

flex = peers.flex
print(torch.__version__, torch.cuda.get_device_name(), flush=True)
with open(out, "a") as f:
    for name in names:
        for S in seqs:
            for D in dims:
                peers.flex = flex if D in flexDims else None
                for causal in (False, True):
                    peers.run_case(max(1, 16384 // S), max(1, 2048 // D), S, D, causal, dtypes[name])
                    row = dict(peers.results[-1], dtype=name)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
