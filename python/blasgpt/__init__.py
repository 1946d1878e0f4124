"""blasgpt: Karpathy's microgpt — the same algorithm, exactly — on an explicit-backprop C++ core over BLAS.

    import blasgpt
    docs = blasgpt.load_docs()                          # bundled names.txt (or load_docs("my.txt"))
    docs, tok, model = blasgpt.microgpt_start(docs)     # microgpt's shuffle + init (seed 42)
    hist = blasgpt.train(model, tok, docs, steps=1000)  # Adam, linear lr decay
    print(blasgpt.sample(model, tok, num=5))

Named recipes (``blasgpt.preset("fast-text")``: a TrainConfig and model sizes, as ``train --preset``): blasgpt.presets.
"""

from ._version import __version__
from .bpe import BPETokenizer, chars_covered
from .checkpoint import Checkpoint, CheckpointError, CheckpointWarning, load_checkpoint, save_checkpoint
from .config import Config, MemoryLimitError, memory_estimate, training_flops
from .corpus import Corpus, Documents, TextStream, load_corpus
from .data import DATASETS, Batch, DataError, TextData, Tokenizer, download_names, load_docs, load_text, read_docs
from .generate import generate, sample
from .model import Model
from .presets import PRESETS, Preset, preset
from .rundir import RunDirError
from .train import History, TrainingError, evaluate_text, fit, lr_at, microgpt_start, train
from .train_config import TrainConfig
from ._core import blas_info

__all__ = [
    "DATASETS",
    "BPETokenizer",
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWarning",
    "Config",
    "Corpus",
    "DataError",
    "Documents",
    "History",
    "MemoryLimitError",
    "Model",
    "PRESETS",
    "Preset",
    "RunDirError",
    "TextData",
    "TextStream",
    "Tokenizer",
    "TrainConfig",
    "TrainingError",
    "__version__",
    "blas_info",
    "chars_covered",
    "download_names",
    "evaluate_text",
    "fit",
    "generate",
    "load_checkpoint",
    "load_corpus",
    "load_docs",
    "load_text",
    "lr_at",
    "memory_estimate",
    "microgpt_start",
    "preset",
    "read_docs",
    "sample",
    "save_checkpoint",
    "train",
    "training_flops",
]
