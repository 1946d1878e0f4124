"""``blasgpt sample``: text from a checkpoint, generated in C++ with a KV cache."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from ..bpe import AnyTokenizer, BPETokenizer
from ..corpus import Corpus, corpus_class
from ..generate import MAX_LENGTH, Generation
from ..model import Model
from ..train_config import TrainConfig
from .common import EXIT_OK, StopRequest, UsageError, load_for_text, nonneg_int, positive_int, silence_if_gone


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    s = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Sample from a trained model, drawing each next character from "
                                   "softmax(logits / temperature) in C++ with a KV cache. Lines-mode models start at "
                                   "BOS (plus --prompt) and stop at BOS or block_size; text-mode models continue "
                                   "--prompt (empty: a newline) for --length characters, sliding the context window "
                                   "past block_size. One text-mode sample (or one document on a terminal) appears "
                                   "as it is generated; the speed goes to stderr. Ctrl-C or SIGTERM stops "
                                   "generating: what is made so far is written (in lines mode the whole "
                                   "documents), then it exits with code 130. A reader that closes the output "
                                   "(| head) ends it quietly.")
    s.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by 'train'")
    s.add_argument("--num", type=nonneg_int, default=None, help="how many samples (default 20; text mode 1)")
    s.add_argument("--length", type=nonneg_int, default=None,
                   help=f"new characters per sample (text mode, default 500, with any tokenizer; --num x --length at "
                        f"most {MAX_LENGTH:,}; lines mode: tokens, at most block_size, the default)")
    s.add_argument("--temperature", type=float, default=None,
                   help="> 0; lower is more conservative (default 0.5; text mode 0.8)")
    s.add_argument("--top-k", type=positive_int, default=None, help="sample only among the K likeliest tokens")
    s.add_argument("--prompt", default="", help="text every sample starts with")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def run(args: argparse.Namespace) -> int:
    ck = load_for_text(args.checkpoint)
    model, tok = ck.model, ck.tokenizer
    assert tok is not None
    mode = TrainConfig.from_checkpoint(ck.extra, ck.step).data_mode
    kind = corpus_class(mode)  # its sampling defaults
    block = model.config.block_size
    units = "tokens" if isinstance(tok, BPETokenizer) else "characters"
    if kind.framed and args.length is not None and args.length > block:
        raise UsageError(f"--length {args.length}: {args.checkpoint} was trained in {mode} mode, so its samples are "
                         f"documents of at most block_size ({block}) {units}; train with --data-mode text for "
                         f"long text")
    num = args.num if args.num is not None else kind.sample_num
    length = args.length if args.length is not None else (kind.sample_length or block)
    temperature = args.temperature if args.temperature is not None else kind.sample_temperature
    try:
        return _generate(args, model, tok, mode, kind, num, length, temperature)
    except OSError as e:  # a reader that has gone (`sample | head`) has what it wanted: stop quietly
        if silence_if_gone(sys.stdout, e):
            return EXIT_OK
        raise


def _generate(args: argparse.Namespace, model: Model, tok: AnyTokenizer, mode: str, kind: type[Corpus], num: int,
              length: int, temperature: float) -> int:
    stream = num == 1 and (sys.stdout.isatty() or not kind.framed)  # written as it comes (documents: on a terminal)
    # Ctrl-C, SIGTERM and SIGHUP (the terminal was closed) end generation between two C++ calls
    with StopRequest(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as stop:
        t0 = time.perf_counter()
        run = Generation(model, tok, args.prompt, length, num, temperature, args.top_k, args.seed, mode)
        if stream:
            sys.stdout.write(args.prompt)
        calls = iter(run)
        while not stop.asked and (pieces := next(calls, None)) is not None:
            if stream:
                sys.stdout.write(pieces[0])
                if sys.stdout.isatty():
                    sys.stdout.flush()
        seconds = time.perf_counter() - t0
        texts = run.texts()
        if stream:
            sys.stdout.write("\n")
        else:  # interrupted: the text so far of each sample; in lines mode the whole documents alone
            for text, whole in zip(texts, run.ended):
                if whole or not kind.framed:
                    print(text)
        sys.stdout.flush()
    if stop.asked:
        raise KeyboardInterrupt  # (reported as "interrupted", exit code 130)
    if not kind.framed:  # long text: say how fast it came
        made = sum(len(t) - len(args.prompt) for t in texts)
        unit = "characters" if isinstance(tok, BPETokenizer) else "tokens"
        print(f"generated {made:,} characters in {seconds:.2f} s ({made / max(seconds, 1e-9):,.0f} {unit}/s, "
              f"{num} sample(s) together, KV cache)", file=sys.stderr)
    return EXIT_OK
