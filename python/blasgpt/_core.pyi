"""Stubs for blasgpt's compiled core (private: use the blasgpt package)."""

from typing import Optional

import numpy as np
import numpy.typing as npt

class _ModelBase:
    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_head: int,
        n_layer: int,
        block_size: int,
        backend: str = "native",
        threads: int = 1,
        tie_embeddings: bool = False,
    ) -> None: ...
    @property
    def num_params(self) -> int: ...
    @property
    def step(self) -> int: ...
    @step.setter
    def step(self, value: int) -> None: ...
    @property
    def backend(self) -> str: ...
    @backend.setter
    def backend(self, value: str) -> None: ...
    @property
    def gemm_plan(self) -> tuple[list[tuple[bool, bool, int, int, int, bool]], bool]: ...
    def set_gemm_plan(self, choices: list[tuple[bool, bool, int, int, int, bool]], fused_attention: bool) -> None: ...
    @property
    def threads(self) -> int: ...
    @threads.setter
    def threads(self, value: int) -> None: ...
    def param_table(self) -> list[tuple[str, tuple[int, int], int]]: ...
    def decayed_params(self) -> list[str]: ...
    def forward_backward(
        self,
        tokens: npt.NDArray[np.int32],
        offsets: npt.NDArray[np.int64],
        doc_ids: Optional[npt.NDArray[np.int64]] = None,
        mean_over: int = 0,
        windows: bool = False,
        accumulate: bool = False,
        dropout: float = 0.0,
        dropout_seed: int = 0,
        share_start: int = 0,
    ) -> float: ...
    def train_step(
        self,
        tokens: npt.NDArray[np.int32],
        offsets: npt.NDArray[np.int64],
        lr: float,
        doc_ids: Optional[npt.NDArray[np.int64]] = None,
        windows: bool = False,
        beta1: float = 0.85,
        beta2: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float = 0.0,
        dropout: float = 0.0,
        dropout_seed: int = 0,
    ) -> float: ...
    def train_steps(
        self,
        tokens: npt.NDArray[np.int32],
        offsets: npt.NDArray[np.int64],
        doc_ids: npt.NDArray[np.int64],
        lrs: npt.NDArray[np.float64],
        beta1: float = 0.85,
        beta2: float = 0.99,
        eps: float = 1e-8,
        windows: bool = False,
        weight_decay: float = 0.0,
        grad_clip: float = 0.0,
        dropout: float = 0.0,
        dropout_seed: int = 0,
    ) -> npt.NDArray[np.float64]: ...
    def apply_adam(
        self,
        lr: float,
        beta1: float = 0.85,
        beta2: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float = 0.0,
    ) -> None: ...
    @property
    def grad_norm(self) -> float: ...
    def loss(
        self,
        tokens: npt.NDArray[np.int32],
        offsets: Optional[npt.NDArray[np.int64]],
        doc_ids: Optional[npt.NDArray[np.int64]] = None,
        windows: bool = False,
    ) -> float: ...
    def generator(
        self,
        prompt: npt.NDArray[np.int32],
        num: int,
        seed: int,
        temperature: float,
        top_k: int = 0,
        stop_token: int = -1,
        ban_token: int = -1,
        slide: bool = False,
    ) -> "_GeneratorBase": ...

class _GeneratorBase:
    def __init__(self, *args: object, **kwargs: object) -> None: ...  # not constructible: Model*.generator makes one
    @property
    def length(self) -> int: ...
    def next(self, count: int) -> npt.NDArray[np.int32]: ...

class GeneratorF32(_GeneratorBase): ...
class GeneratorF64(_GeneratorBase): ...

class ModelF32(_ModelBase):
    def params(self) -> npt.NDArray[np.float32]: ...
    def grads(self) -> npt.NDArray[np.float32]: ...
    def adam_m(self) -> npt.NDArray[np.float32]: ...
    def adam_v(self) -> npt.NDArray[np.float32]: ...
    def logits(self, tokens: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]: ...

class ModelF64(_ModelBase):
    def params(self) -> npt.NDArray[np.float64]: ...
    def grads(self) -> npt.NDArray[np.float64]: ...
    def adam_m(self) -> npt.NDArray[np.float64]: ...
    def adam_v(self) -> npt.NDArray[np.float64]: ...
    def logits(self, tokens: npt.NDArray[np.int32]) -> npt.NDArray[np.float64]: ...

def adam_update(
    params: npt.NDArray[np.floating],
    m: npt.NDArray[np.floating],
    v: npt.NDArray[np.floating],
    grads: npt.NDArray[np.floating],
    lr: float,
    step: int,
    beta1: float = 0.85,
    beta2: float = 0.99,
    eps: float = 1e-8,
) -> None: ...
def check_batch(
    tokens: object, offsets: object, doc_ids: object = None, windows: bool = False
) -> None: ...
def pack_documents(ids: bytes, bos: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def _fp_control() -> int: ...
def _set_fp_control(word: int) -> None: ...

class BpeEncoder:
    def __init__(self, merges: object) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: bytes) -> npt.NDArray[np.int32]: ...
    def encode_documents(
        self, docs: list[bytes], bos: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    @staticmethod
    def pretokens(text: bytes) -> list[bytes]: ...

def blas_info() -> str: ...
def native_isa() -> str: ...
def peak_gflops(dtype: str, seconds: float = 0.2) -> float: ...
def time_gemm(
    dtype: str, ta: bool, tb: bool, m: int, n: int, k: int, seconds: float = 0.01
) -> tuple[float, float]: ...
def time_attention(
    dtype: str, C: int, H: int, n: int, docs: int, choices: list[tuple[bool, bool, int, int, int, bool]],
    seconds: float = 0.01,
) -> tuple[float, float]: ...
def workspace_size(
    vocab_size: int,
    n_embd: int,
    n_head: int,
    n_layer: int,
    block_size: int,
    rows: int,
    tie_embeddings: bool = False,
) -> tuple[int, int]: ...
def num_params(
    vocab_size: int, n_embd: int, n_head: int, n_layer: int, block_size: int, tie_embeddings: bool = False
) -> int: ...
def param_table(
    vocab_size: int, n_embd: int, n_head: int, n_layer: int, block_size: int, tie_embeddings: bool = False
) -> list[tuple[str, tuple[int, int], int]]: ...
