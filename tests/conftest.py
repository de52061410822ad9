import os

import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter (correctness only, tiny
# shapes). It must be switched on before `ops` imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, os.cpu_count() or 1))
