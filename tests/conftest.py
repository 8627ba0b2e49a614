import os
import sys

# One intra-op thread per process: the suite's tensors are tiny, and several processes (DDP, CLI subprocesses)
# share two cores, where extra threads only contend.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)
