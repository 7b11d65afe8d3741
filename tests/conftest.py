"""Suite-wide test settings."""

import torch

# The tests use tiny tensors: one thread is faster than two (no OpenMP hand-offs) and keeps the suite steady
# when the 2-core machine is shared.
torch.set_num_threads(1)
