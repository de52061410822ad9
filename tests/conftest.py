import os

import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter (correctness only, tiny
# shapes). It must be switched on before `ops` imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests use tiny tensors: one intra-op thread avoids OpenMP spin-waits (10-100x slowdowns were
# measured on a busy 2-core machine) and leaves the second core to pytest-xdist workers.
torch.set_num_threads(1)
