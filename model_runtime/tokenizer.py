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
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import tiktoken

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.config import (
    MAX_VOCAB_BYTES,
    TEXT_LIMITS,
    model_file_exists,
    read_file_bytes,
    read_json_object,
)

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
MAX_RANKS = TEXT_LIMITS["vocab_size"][1] - NUM_SPECIAL_TOKENS  # every id must fit config.json's vocab bound
MAX_TOKEN_BYTES = 1024  # Kimi-VL's longest token has 256 bytes
MAX_SPECIAL_NAME_CHARS = 256


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a `tiktoken.model` file: one `base64(token_bytes) rank` pair per line.

    Checked here, before tiktoken sees them (its Rust core panics on duplicates and overflows on huge
    ranks): the file is at most `MAX_VOCAB_BYTES`, every token is distinct and at most `MAX_TOKEN_BYTES`
    long, and the ranks are exactly 0..N-1 with N <= `MAX_RANKS`. A violation raises `ConfigError`
    naming the file and line.
    """
    data = read_file_bytes(path, max_bytes=MAX_VOCAB_BYTES)
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token_b64, rank_bytes = line.split()
            token = base64.b64decode(token_b64, validate=True)
            rank_text = rank_bytes.decode("ascii", errors="replace")
            if not (rank_text.isascii() and rank_text.isdigit()):
                raise ValueError(f"rank {rank_text[:20]!r} is not a non-negative integer")
        except ValueError as e:
            raise ConfigError(f"{path}: line {lineno} is not 'base64-token rank' ({e})") from None
        rank = int(rank_text) if len(rank_text) <= 10 else MAX_RANKS
        if rank >= MAX_RANKS:
            raise ConfigError(f"{path}: line {lineno}: rank {rank_text[:20]} is out of range [0, {MAX_RANKS:,})")
        if not 0 < len(token) <= MAX_TOKEN_BYTES:
            raise ConfigError(f"{path}: line {lineno}: a token must be 1 to {MAX_TOKEN_BYTES} bytes, "
                              f"got {len(token):,}")
        if rank in line_of_rank:
            raise ConfigError(f"{path}: line {lineno}: duplicate rank {rank} (also on line {line_of_rank[rank]})")
        if token in ranks:
            raise ConfigError(f"{path}: line {lineno}: duplicate token {token[:40]!r} (rank {ranks[token]} "
                              f"on line {line_of_rank[ranks[token]]})")
        ranks[token] = rank
        line_of_rank[rank] = lineno
    if not ranks:
        raise ConfigError(f"{path} holds no tokens")
    if max(line_of_rank) != len(ranks) - 1:
        gap = next(i for i in range(len(ranks) + 1) if i not in line_of_rank)
        raise ConfigError(f"{path}: ranks must be exactly 0..{len(ranks) - 1} (one per line); rank {gap} is "
                          f"missing and rank {max(line_of_rank):,} is used")
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
        #: Special ids with a name of their own (not the `<|reserved_token_{id}|>` placeholder).
        self.named_special_ids: frozenset[int] = frozenset(
            i for name, i in special_tokens.items() if name != f"<|reserved_token_{i}|>")
        #: Ids of ordinary (BPE) tokens are 0 .. num_ranks - 1.
        self.num_ranks: int = len(mergeable_ranks)
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
            if not model_file_exists(f):
                raise ConfigError(f"{f} is missing; the Kimi-VL tokenizer needs it.")
        return cls._load(vocab_file, vocab_file.stat().st_mtime_ns, config_file, config_file.stat().st_mtime_ns)

    @classmethod
    @lru_cache(maxsize=4)
    def _load(cls, vocab_file: Path, _vocab_mtime: int, config_file: Path, _config_mtime: int) -> Tokenizer:
        ranks = load_ranks(vocab_file)
        config = read_json_object(config_file)
        base = len(ranks)
        names = _special_names(config, config_file, range(base, base + NUM_SPECIAL_TOKENS))
        specials: dict[str, int] = {}
        for i in range(base, base + NUM_SPECIAL_TOKENS):
            name = names.get(i, f"<|reserved_token_{i}|>")
            if name in specials:  # a default name taken by another id
                raise ConfigError(f"{config_file}: added_tokens_decoder: special token {name!r} names both id "
                                  f"{specials[name]} and id {i}")
            specials[name] = i
        bos = special_token_name(config, "bos_token", "[BOS]", config_file)
        eos = special_token_name(config, "eos_token", "[EOS]", config_file)
        for key, tok in (("bos_token", bos), ("eos_token", eos)):
            if tok not in specials:
                raise ConfigError(f"{config_file}: {key} {tok!r} is not a special token.")
        try:
            return cls(ranks, specials, bos_token=bos, eos_token=eos, name=vocab_file.name)
        except ValueError as e:  # tiktoken's own checks (the ones above should leave none)
            raise ConfigError(f"{vocab_file}: tiktoken refuses this vocabulary ({e})") from None

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


def special_token_name(config: dict[str, Any], key: str, default: str, config_file: Path | str) -> str:
    """`config[key]` as a token string: a string, or transformers' `{"content": "...", ...}` form."""
    value = config.get(key, default)
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise ConfigError(f"{config_file}: key {key!r} must be a token string or an object with a 'content' "
                          f"string, got {type(value).__name__}")
    return value


def _special_names(config: dict[str, Any], config_file: Path, ids: range) -> dict[int, str]:
    """`{id: name}` from `added_tokens_decoder` (`{"163584": {"content": "[BOS]", ...}, ...}`).

    Each id must be a decimal integer in `ids` (after the BPE ranks: a lower id would turn a text token
    into a special one) and each name non-empty, not only whitespace (tiktoken would match an empty name
    at every position, forever), at most `MAX_SPECIAL_NAME_CHARS` long and unique.
    """
    table = config.get("added_tokens_decoder")
    if not isinstance(table, dict):
        raise ConfigError(f"{config_file}: key 'added_tokens_decoder' is missing or not an object.")
    names: dict[int, str] = {}
    ids_of: dict[str, int] = {}
    for key, entry in table.items():
        where = f"{config_file}: added_tokens_decoder[{key[:20]!r}]"
        content = entry.get("content") if isinstance(entry, dict) else None
        if not (key.isascii() and key.isdigit() and len(key) <= 7) or not isinstance(content, str):
            raise ConfigError(f"{where} needs an integer id and a 'content' string.")
        token_id = int(key)
        if token_id not in ids:
            raise ConfigError(f"{where}: special token ids must be in [{ids.start}, {ids.stop}) (after the "
                              f"{ids.start:,} BPE ranks of tiktoken.model), got {token_id}")
        if not content.strip() or len(content) > MAX_SPECIAL_NAME_CHARS:
            raise ConfigError(f"{where}: 'content' must be a non-blank name of at most {MAX_SPECIAL_NAME_CHARS} "
                              f"characters, got {content[:40]!r}")
        if content in ids_of and ids_of[content] != token_id:
            raise ConfigError(f"{where}: special token {content!r} already names id {ids_of[content]}")
        names[token_id], ids_of[content] = content, token_id
    return names
