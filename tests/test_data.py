from __future__ import annotations

import hashlib
import random
import re

import numpy as np
import pytest

import blasgpt
from blasgpt import data


def test_tokenizer_round_trip():
    docs = ["héllo", "wörld", "zz"]
    tok = blasgpt.Tokenizer.from_docs(docs)
    assert tok.chars == sorted(set("".join(docs))) and tok.bos == len(tok.chars)
    for d in docs:
        ids = tok.encode(d)
        assert ids.dtype == np.int32 and tok.decode(ids) == d
    assert tok.decode([tok.bos, *tok.encode("zz"), tok.bos]) == "zz"
    with pytest.raises(ValueError, match=r"3 character\(s\) not in the vocabulary: 'i', 'q', 'u'"):
        tok.encode("quiz")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_batch_packing_matches_a_plain_loop():
    rng = random.Random(0)
    docs = ["".join(rng.choice("abcde") for _ in range(rng.randint(0, 12))) for _ in range(50)]
    docs = [d for d in docs if d]
    tok = blasgpt.Tokenizer.from_docs(docs)
    for block in (None, 1, 4, 30):
        b = tok.batch(docs, block_size=block)
        assert b.num_docs == len(docs) and b.offsets[0] == 0
        for i, d in enumerate(docs):
            want = [tok.bos] + [tok.chars.index(c) for c in d] + [tok.bos]
            if block is not None:
                want = want[: block + 1]
            assert b.tokens[b.offsets[i]:b.offsets[i + 1]].tolist() == want


@pytest.mark.parametrize("alphabet", [
    "abcde",                                   # names: the bytes.translate path
    "\x00\x01ab\xff",                          # latin-1 with NUL and U+00FF in the vocabulary
    "".join(map(chr, range(1, 256))),          # 255 characters: BOS is 255, still one byte
    "".join(map(chr, range(256))),             # 256 characters: BOS needs more than a byte (code-point table)
    "aé€z",                                    # past U+00FF: the code-point table
    "a\U0001F600z",                            # past U+FFFF: binary search
])
def test_every_encoding_path_packs_like_a_plain_loop(alphabet):
    rng = random.Random(len(alphabet))
    chars = sorted(set(alphabet))
    tok = blasgpt.Tokenizer(chars)
    docs = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 9))) for _ in range(100)]
    for block in (None, 1, 5):
        for group in (docs[:1], docs[1:2], docs[:20], docs):  # 1, a few and many documents: three ways
            b = tok.batch(group, block_size=block)
            want = [[tok.bos, *(chars.index(c) for c in d), tok.bos][: None if block is None else block + 1]
                    for d in group]
            assert b.tokens.dtype == np.int32 and b.offsets.dtype == np.int64
            assert b.tokens.tolist() == [t for w in want for t in w]
            assert b.offsets.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()
    assert tok.encode("".join(docs)).tolist() == [chars.index(c) for c in "".join(docs)]
    outside = next(chr(c) for c in range(0x110000) if chr(c) not in chars)  # e.g. the byte BOS is packed from
    for bad in (outside, "\u0100", "\U0001F601"):
        if bad in chars:
            continue
        with pytest.raises(ValueError, match=rf"1 character\(s\) not in the vocabulary: {re.escape(repr(bad))}"):
            tok.encode(chars[0] + bad)
        with pytest.raises(ValueError, match=rf"1 character\(s\) not in the vocabulary: {re.escape(repr(bad))}"):
            tok.batch([chars[0], chars[-1] + bad + chars[0]])


def test_read_docs_strips_and_keeps_order(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("  bob \n\n alice\r\nbob\n\t\n", encoding="utf-8")
    assert blasgpt.read_docs(p) == ["bob", "alice", "bob"]


def test_load_docs_resolution(tmp_path, monkeypatch):
    mine = tmp_path / "mine.txt"
    mine.write_text("x\ny\n")
    monkeypatch.setenv("BLASGPT_DATA", str(mine))
    assert blasgpt.load_docs() == ["x", "y"]
    explicit = tmp_path / "explicit.txt"
    explicit.write_text("z\n")
    assert blasgpt.load_docs(explicit) == ["z"]
    monkeypatch.delenv("BLASGPT_DATA")
    assert len(blasgpt.load_docs()) == 32033  # the bundled names.txt


def test_missing_bundle_falls_back_to_cache_then_download(tmp_path, monkeypatch):
    source = tmp_path / "served_names.txt"
    source.write_text("ava\nbo\n")
    monkeypatch.setattr(data, "BUNDLED_NAMES", tmp_path / "absent.txt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "NAMES_URL", source.as_uri())
    monkeypatch.setattr(data, "NAMES_SHA256", hashlib.sha256(source.read_bytes()).hexdigest())
    assert blasgpt.load_docs() == ["ava", "bo"]  # downloaded into the cache
    assert (tmp_path / "cache" / "blasgpt" / "names.txt").read_text() == "ava\nbo\n"
    source.unlink()
    assert blasgpt.load_docs() == ["ava", "bo"]  # now served from the cache


def test_download_verifies_checksum_and_writes_nothing_on_mismatch(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("emma\nolivia\n")
    dest = tmp_path / "out" / "names.txt"
    with pytest.raises(blasgpt.DataError, match="expected 0a30b555"):
        blasgpt.download_names(dest, url=source.as_uri())  # makemore's checksum: this file is not it
    assert not dest.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "partial file left behind"
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    assert blasgpt.download_names(dest, url=source.as_uri(), sha256=good) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["names.txt"]


def test_bundled_names_licence_is_shipped():
    lic = data.BUNDLED_NAMES.parent / "names.LICENSE"
    assert "MIT" in lic.read_text() and "Karpathy" in lic.read_text()


def test_bundled_names_is_makemores_file():
    assert hashlib.sha256(data.BUNDLED_NAMES.read_bytes()).hexdigest() == data.NAMES_SHA256
