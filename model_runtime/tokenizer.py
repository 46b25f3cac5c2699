"""Kimi-VL's tiktoken BPE tokenizer, built offline from a checkpoint's `tiktoken.model`.

Byte-level BPE over 163,584 ranks with Moonshot's split pattern, plus 258 special tokens
(ids 163584..163841) named by `tokenizer_config.json` (`<|reserved_token_{id}|>` otherwise).
Special-token strings in text encode as specials; no BOS is ever added. Thinking markers
(`◁think▷`) are plain text. `StreamDecoder` turns a stream of ids into text without emitting
half of a multi-byte character.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import tiktoken

from kimi_agent.errors import ConfigError

# The pre-tokenizer regex of the official tokenizer (alternatives in this order). `&&` is a class
# intersection, which tiktoken's Rust regex engine accepts.
PAT_STR = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
NUM_SPECIAL_TOKENS = 256 + 2
MAX_ENCODE_CHARS = 400_000  # tiktoken is fed at most this many characters at a time
MAX_RUN_CHARS = 25_000  # longest run of only-whitespace or only-non-whitespace fed to tiktoken
_RUNS = re.compile(r"\s+|\S+")  # Python's \s is exactly str.isspace()


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a `tiktoken.model` file: one `base64(token_bytes) rank` pair per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise ConfigError(f"{path}: line {lineno} is not 'base64-token rank' ({e})") from None
    return ranks


def split_long_runs(text: str, max_run: int = MAX_RUN_CHARS) -> list[str]:
    """Cut `text` so that no piece holds more than `max_run` consecutive whitespace or
    non-whitespace characters (a run is cut every `max_run` characters from its start).

    Long runs make tiktoken's regex stage quadratic; cutting them changes tokens only for
    pathological input and matches the official tokenizer's behaviour.
    """
    if len(text) <= max_run:
        return [text]
    cuts = [
        cut
        for m in _RUNS.finditer(text)
        if m.end() - m.start() > max_run
        for cut in range(m.start() + max_run, m.end(), max_run)
    ]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


class Tokenizer:
    """Kimi-VL tokenizer: `encode(str) -> list[int]`, `decode(list[int]) -> str`.

    Build it with `Tokenizer.from_dir(checkpoint_dir)`. `n_vocab` is 163,842 (the model's
    embedding has 163,840 rows; ids 163840/163841 are never produced by encoding text).
    """

    def __init__(self, mergeable_ranks: dict[bytes, int], special_tokens: dict[str, int], *,
                 bos_token: str = "[BOS]", eos_token: str = "[EOS]", name: str = "kimi_vl") -> None:
        self.encoding = tiktoken.Encoding(name=name, pat_str=PAT_STR, mergeable_ranks=mergeable_ranks,
                                          special_tokens=special_tokens)
        self.special_tokens: dict[str, int] = dict(special_tokens)
        self.special_ids: frozenset[int] = frozenset(special_tokens.values())
        #: The longest ordinary token in bytes (256 for Kimi-VL): a text of n UTF-8 bytes (so of at most n
        #: characters) encodes to at least n / max_token_bytes tokens, a bound known before encoding.
        self.max_token_bytes: int = max(map(len, mergeable_ranks), default=1)
        self.bos_id = self.token_id(bos_token)
        self.eos_id = self.token_id(eos_token)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load `tiktoken.model` and the special-token names of `tokenizer_config.json` in `path`.

        Instances are immutable and cached per (file, modification time), so building several
        processors for one checkpoint parses the 163k-line vocabulary once.
        """
        path = Path(path).resolve()
        vocab_file, config_file = path / "tiktoken.model", path / "tokenizer_config.json"
        for f in (vocab_file, config_file):
            if not f.is_file():
                raise ConfigError(f"{f} is missing; the Kimi-VL tokenizer needs it.")
        return cls._load(vocab_file, vocab_file.stat().st_mtime_ns, config_file, config_file.stat().st_mtime_ns)

    @classmethod
    @lru_cache(maxsize=4)
    def _load(cls, vocab_file: Path, _vocab_mtime: int, config_file: Path, _config_mtime: int) -> Tokenizer:
        ranks = load_ranks(vocab_file)
        config = _read_json(config_file)
        names = _special_names(config, config_file)
        base = len(ranks)
        specials = {names.get(i, f"<|reserved_token_{i}|>"): i for i in range(base, base + NUM_SPECIAL_TOKENS)}
        bos, eos = config.get("bos_token", "[BOS]"), config.get("eos_token", "[EOS]")
        for key, tok in (("bos_token", bos), ("eos_token", eos)):
            if tok not in specials:
                raise ConfigError(f"{config_file}: {key} {tok!r} is not a special token.")
        return cls(ranks, specials, bos_token=bos, eos_token=eos, name=vocab_file.name)

    @property
    def n_vocab(self) -> int:
        """Number of ids, base ranks plus special tokens (163,842 for Kimi-VL)."""
        return self.encoding.n_vocab

    def token_id(self, special: str) -> int:
        """Id of a special token such as `<|im_end|>`; `ConfigError` if it does not exist."""
        try:
            return self.special_tokens[special]
        except KeyError:
            raise ConfigError(f"{special!r} is not a special token of this tokenizer.") from None

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of `text` (no BOS). Special-token strings become their ids unless
        `allow_special=False`, in which case they are encoded as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        allowed: Any = "all" if allow_special else set()
        ids: list[int] = []
        for i in range(0, len(text), MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[i:i + MAX_ENCODE_CHARS]):
                ids.extend(self.encoding.encode(piece, allowed_special=allowed, disallowed_special=()))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes of `ids` (special tokens included as their names)."""
        return self.encoding.decode_bytes(_as_list(ids))

    def decode(self, ids: Iterable[int] | int, *, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 (e.g. a cut multi-byte char) becomes U+FFFD."""
        seq = _as_list(ids)
        if skip_special_tokens:
            seq = [t for t in seq if t not in self.special_ids]
        return self.encoding.decode(seq, errors="replace")

    def stream_decoder(self, *, skip_special_tokens: bool = False) -> StreamDecoder:
        """A fresh incremental decoder for streaming generation."""
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)


class StreamDecoder:
    """Incremental detokenizer: `push(ids)` returns only complete characters, holding back the
    bytes of a multi-byte UTF-8 character until its last byte arrives; `flush()` ends the stream.

    The concatenation of every `push` and the final `flush` equals `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int] | int) -> str:
        """Feed new token ids; return the text that is now complete (possibly "")."""
        seq = _as_list(ids)
        if self._skip:
            seq = [t for t in seq if t not in self._tok.special_ids]
        return self._utf8.decode(self._tok.encoding.decode_bytes(seq))

    def flush(self) -> str:
        """Text of any held-back bytes (U+FFFD if they never became a full character)."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out

    def __call__(self, ids: Iterable[int] | int) -> str:
        return self.push(ids)


def iter_decode(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Yield the text of each id as it becomes decodable (streaming helper)."""
    dec = tokenizer.stream_decoder()
    for t in ids:
        if piece := dec.push(t):
            yield piece
    if tail := dec.flush():
        yield tail


def _as_list(ids: Iterable[int] | int) -> list[int]:
    """Normalise an int, a list, a numpy array or a torch tensor of ids to a list of ints."""
    if isinstance(ids, int):
        return [ids]
    tolist = getattr(ids, "tolist", None)
    if tolist is not None:
        out = tolist()
        return [out] if isinstance(out, int) else [int(t) for t in out]
    return [int(t) for t in ids]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at top level.")
    return data


def _special_names(config: dict[str, Any], config_file: Path) -> dict[int, str]:
    """`{id: name}` from `added_tokens_decoder` (`{"163584": {"content": "[BOS]", ...}, ...}`)."""
    table = config.get("added_tokens_decoder")
    if not isinstance(table, dict):
        raise ConfigError(f"{config_file}: key 'added_tokens_decoder' is missing or not an object.")
    names: dict[int, str] = {}
    for key, entry in table.items():
        content = entry.get("content") if isinstance(entry, dict) else None
        if not str(key).isdigit() or not isinstance(content, str):
            raise ConfigError(f"{config_file}: added_tokens_decoder[{key!r}] needs an integer id and a 'content' string.")
        names[int(key)] = content
    return names
