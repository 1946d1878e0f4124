"""blasgpt: Karpathy's microgpt — the same algorithm, exactly — on an explicit-backprop C++ core over BLAS.

    import blasgpt
    docs = blasgpt.load_docs()                          # bundled names.txt (or load_docs("my.txt"))
    docs, tok, model = blasgpt.microgpt_start(docs)     # microgpt's shuffle + init (seed 42)
    hist = blasgpt.train(model, tok, docs, steps=1000)  # Adam, linear lr decay
    print(blasgpt.sample(model, tok, num=5))
"""

from ._version import __version__
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, MemoryLimitError, memory_estimate, training_flops
from .data import Batch, DataError, Tokenizer, download_names, load_docs, read_docs
from .model import Model, sample
from .train import History, TrainingError, lr_at, microgpt_start, train
from ._core import blas_info

__all__ = [
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "Config",
    "DataError",
    "History",
    "MemoryLimitError",
    "Model",
    "Tokenizer",
    "TrainingError",
    "__version__",
    "blas_info",
    "download_names",
    "load_checkpoint",
    "load_docs",
    "lr_at",
    "memory_estimate",
    "microgpt_start",
    "read_docs",
    "sample",
    "save_checkpoint",
    "train",
    "training_flops",
]
