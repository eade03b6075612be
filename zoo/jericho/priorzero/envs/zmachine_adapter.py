"""Generic adapter for Inform 6 Z-machine games that Jericho has no bindings for.

Jericho plays any story file, but score, moves, victory, the world hash and ``get_valid_actions`` come from
per-game C bindings. For our own game (or any Inform 6 game compiled with ``-k``) this module gets the same
facts from the game state itself:

* ``score``, ``deadflag``, ``turns`` and ``player`` are Inform library globals; their RAM addresses come from
  the compiler's debug file, reduced to a small JSON metadata file by ``games/build.py``.
* The world state is the Z-machine object table (attributes and tree links), read from RAM.
* Valid actions are found by trying candidate commands built from the objects in scope and their own
  dictionary words: restore the state, run the command, compare the state signature, keep one command per
  distinct outcome that differs from doing nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Directions tried as movement commands, in this order (only those in the game's dictionary).
DIRECTIONS: tuple[str, ...] = (
    "north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest", "up", "down", "in", "out",
)
# One-object verb templates, in generation order: the first template reaching an outcome names it.
ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "take {a}", "drop {a}", "open {a}", "close {a}", "light {a}", "push {a}", "pull {a}", "turn {a}",
    "eat {a}", "drink {a}", "wear {a}", "remove {a}", "enter {a}", "climb {a}", "dig {a}", "break {a}",
    "move {a}", "turn on {a}", "turn off {a}", "switch on {a}", "switch off {a}", "read {a}", "search {a}",
)
# Two-object templates: (template, which slot must be held by the player).
TWO_OBJECT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("unlock {a} with {b}", "b"), ("lock {a} with {b}", "b"), ("open {a} with {b}", "b"),
    ("put {a} in {b}", "a"), ("put {a} on {b}", "a"), ("give {a} to {b}", "a"), ("light {a} with {b}", "b"),
    ("dig {a} with {b}", "b"), ("cut {a} with {b}", "b"), ("tie {a} to {b}", "a"),
)
NO_OP_COMMAND = "wait"

_ALPHABET_A0 = "abcdefghijklmnopqrstuvwxyz"
_ALPHABET_A1 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALPHABET_A2 = " \n0123456789.,!?_#'\"/\\-:()"  # index 0 is the 10-bit escape, 1 is newline (V2+)


@dataclass(frozen=True)
class GameMetadata:
    """RAM addresses and counts for one compiled Inform 6 story (written by ``games/build.py``)."""

    story_file: str
    md5: str
    zversion: int
    max_score: int
    global_addresses: dict[str, int]
    object_count: int
    name_property: int

    @classmethod
    def load(cls, path: Path) -> "GameMetadata":
        if not path.is_file():
            raise FileNotFoundError(f"Z-machine adapter metadata not found: {path}")
        data = json.loads(path.read_text())
        missing = [key for key in cls.__dataclass_fields__ if key not in data]
        if missing:
            raise ValueError(f"Adapter metadata {path} lacks keys {missing}")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def _word(memory: np.ndarray | bytes, address: int) -> int:
    return (int(memory[address]) << 8) | int(memory[address + 1])


class ZStringDecoder:
    """Decodes Z-machine text (dictionary words, object short names); static data comes from the story file."""

    def __init__(self, story: bytes) -> None:
        self._story = story
        self._version = story[0]
        self._abbreviations = _word(story, 0x18)
        alphabet_table = _word(story, 0x34) if self._version >= 5 else 0
        if alphabet_table:
            raw = story[alphabet_table:alphabet_table + 78].decode("latin-1")
            self._alphabets = (raw[:26], raw[26:52], " \n" + raw[54:78])
        else:
            self._alphabets = (_ALPHABET_A0, _ALPHABET_A1, _ALPHABET_A2)

    def decode(self, memory: np.ndarray | bytes, address: int, max_words: int | None = None,
               allow_abbreviations: bool = True) -> str:
        zchars: list[int] = []
        words_read = 0
        while max_words is None or words_read < max_words:
            word = _word(memory, address + 2 * words_read)
            words_read += 1
            zchars.extend(((word >> 10) & 0x1F, (word >> 5) & 0x1F, word & 0x1F))
            if word & 0x8000:
                break
        return self._zchars_to_text(zchars, allow_abbreviations)

    def _zchars_to_text(self, zchars: list[int], allow_abbreviations: bool) -> str:
        out: list[str] = []
        alphabet = 0
        index = 0
        while index < len(zchars):
            zchar = zchars[index]
            index += 1
            if zchar == 0:
                out.append(" ")
            elif 1 <= zchar <= 3:
                if index < len(zchars) and allow_abbreviations:
                    entry = 32 * (zchar - 1) + zchars[index]
                    out.append(self.decode(self._story, 2 * _word(self._story, self._abbreviations + 2 * entry),
                                           allow_abbreviations=False))
                index += 1
            elif zchar in (4, 5):
                alphabet = zchar - 3
                continue
            elif alphabet == 2 and zchar == 6:
                if index + 1 < len(zchars):
                    out.append(chr((zchars[index] << 5) | zchars[index + 1]))
                index += 2
            else:
                out.append(self._alphabets[alphabet][zchar - 6])
            alphabet = 0
        return "".join(out)


class ObjectTable:
    """Reads the Z-machine object table (V1-3 and V4+ layouts) from a RAM snapshot."""

    def __init__(self, story: bytes, object_count: int) -> None:
        version = story[0]
        self.object_count = object_count
        self.table_address = _word(story, 0x0A)
        defaults_size = 62 if version <= 3 else 126
        self.entry_size = 9 if version <= 3 else 14
        self._attribute_bytes = 4 if version <= 3 else 6
        self._small = version <= 3
        self.entries_start = self.table_address + defaults_size
        self.entries_end = self.entries_start + self.entry_size * object_count

    def _entry(self, obj: int) -> int:
        return self.entries_start + self.entry_size * (obj - 1)

    def links(self, ram: np.ndarray, obj: int) -> tuple[int, int, int]:
        """(parent, sibling, child) of object ``obj``."""
        at = self._entry(obj) + self._attribute_bytes
        if self._small:
            return int(ram[at]), int(ram[at + 1]), int(ram[at + 2])
        return _word(ram, at), _word(ram, at + 2), _word(ram, at + 4)

    def property_table(self, ram: np.ndarray, obj: int) -> int:
        return _word(ram, self._entry(obj) + self._attribute_bytes + (3 if self._small else 6))

    def property_data(self, ram: np.ndarray, obj: int, prop: int) -> bytes:
        """Raw bytes of property ``prop`` of ``obj`` (empty if absent)."""
        address = self.property_table(ram, obj)
        address += 1 + 2 * int(ram[address])  # skip the short name
        while True:
            size_byte = int(ram[address])
            if size_byte == 0:
                return b""
            if self._small:
                number, size, header = size_byte & 0x1F, (size_byte >> 5) + 1, 1
            elif size_byte & 0x80:
                number, size, header = size_byte & 0x3F, (int(ram[address + 1]) & 0x3F) or 64, 2
            else:
                number, size, header = size_byte & 0x3F, 2 if size_byte & 0x40 else 1, 1
            if number == prop:
                return bytes(ram[address + header:address + header + size])
            address += header + size

    def children(self, ram: np.ndarray, obj: int) -> list[int]:
        result = []
        child = self.links(ram, obj)[2]
        while 0 < child <= self.object_count and len(result) <= self.object_count:
            result.append(child)
            child = self.links(ram, child)[1]
        return result

    def descendants(self, ram: np.ndarray, obj: int) -> list[int]:
        found: list[int] = []
        stack = list(reversed(self.children(ram, obj)))
        while stack and len(found) <= self.object_count:
            current = stack.pop()
            found.append(current)
            stack.extend(reversed(self.children(ram, current)))
        return found


class ZMachineAdapter:
    """Jericho ``FrotzEnv`` plus score, victory, world hash and valid actions for an Inform 6 game."""

    def __init__(self, story_path: Path, metadata: GameMetadata, seed: int = 0) -> None:
        from jericho import FrotzEnv  # jericho is only needed where a game is actually played

        self.story_path = Path(story_path)
        self.metadata = metadata
        story = self.story_path.read_bytes()
        if hashlib.md5(story).hexdigest() != metadata.md5:
            logger.warning("Story %s does not match its metadata md5; rebuild the metadata.", story_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # UnsupportedGameWarning is expected: that is why this adapter exists
            self._env = FrotzEnv(str(self.story_path), seed=seed)
        self._decoder = ZStringDecoder(story)
        self._objects = ObjectTable(story, metadata.object_count)
        self._dictionary = self._read_dictionary(story)
        self._dictionary_words = set(self._dictionary.values())
        self._word_length = 6 if story[0] <= 3 else 9
        self.max_score = metadata.max_score

    # ----------------------------------------------------------------- game interface
    def reset(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            observation, _ = self._env.reset()
        return observation

    def step(self, action: str) -> str:
        return self._env.step(action)[0]

    def get_state(self) -> tuple:
        return self._env.get_state()

    def set_state(self, state: tuple) -> None:
        self._env.set_state(state)

    def close(self) -> None:
        self._env.close()

    def _global(self, name: str, ram: np.ndarray | None = None) -> int:
        ram = self._ram() if ram is None else ram
        return int(np.int16(_word(ram, self.metadata.global_addresses[name])))

    def _ram(self) -> np.ndarray:
        # Jericho's RAM-only read: get_state() would also copy the stack and registers, on every global read.
        return self._env._get_ram()  # noqa: SLF001

    def score(self) -> int:
        return self._global("score")

    def moves(self) -> int:
        return self._global("turns")

    def victory(self) -> bool:
        return self._global("deadflag") == 2

    def game_over(self) -> bool:
        """True when the game ended without a win (Inform: deadflag 1 = died, 3+ = other endings)."""
        flag = self._global("deadflag")
        return flag != 0 and flag != 2

    def walkthrough(self) -> list[str]:
        return []

    # ----------------------------------------------------------------- world state
    def _signature(self, ram: np.ndarray) -> bytes:
        """Object table (attributes, tree) plus score and deadflag: what an action can change for good."""
        addresses = self.metadata.global_addresses
        extra = b"".join(bytes(ram[addresses[name]:addresses[name] + 2]) for name in ("score", "deadflag"))
        return bytes(ram[self._objects.entries_start:self._objects.entries_end]) + extra

    def world_state_hash(self) -> str:
        return hashlib.md5(self._signature(self._ram())).hexdigest()

    def state_key(self) -> str:
        """The world hash (already a hash of raw memory, cheap)."""
        return self.world_state_hash()

    # ----------------------------------------------------------------- names and scope
    def _read_dictionary(self, story: bytes) -> dict[int, str]:
        """Dictionary entry address -> word, decoded from the story file."""
        address = _word(story, 0x08)
        separator_count = story[address]
        address += 1 + separator_count
        entry_length = story[address]
        entry_count = abs(int(np.int16(_word(story, address + 1))))
        address += 3
        text_words = 2 if story[0] <= 3 else 3
        return {
            address + i * entry_length: self._decoder.decode(story, address + i * entry_length, max_words=text_words,
                                                             allow_abbreviations=False).strip()
            for i in range(entry_count)
        }

    def object_noun(self, ram: np.ndarray, obj: int) -> str | None:
        """The word a player would type for ``obj``: the last word of its short name if the parser knows it."""
        name_data = self._objects.property_data(ram, obj, self.metadata.name_property)
        name_words = [self._dictionary.get(_word(name_data, i)) for i in range(0, len(name_data) - 1, 2)]
        name_words = [word for word in name_words if word]
        if not name_words:
            return None
        short_name = self._decoder.decode(ram, self._objects.property_table(ram, obj) + 1).lower().split()
        for word in reversed(short_name):
            if word[: self._word_length] in name_words:
                return word
        return name_words[0]

    def _player_and_room(self, ram: np.ndarray) -> tuple[int, int]:
        player = self._global("player", ram)
        room = player
        for _ in range(self.metadata.object_count):
            parent = self._objects.links(ram, room)[0]
            if parent == 0:
                break
            room = parent
        return player, room

    def _knows(self, phrase: str) -> bool:
        return all(word[: self._word_length] in self._dictionary_words for word in phrase.split() if "{" not in word)

    def candidate_actions(self) -> list[str]:
        """Commands worth trying in the current state, in a fixed order."""
        ram = self._ram()
        player, room = self._player_and_room(ram)
        in_scope = [obj for obj in self._objects.descendants(ram, room) if obj != player]
        held = set(self._objects.children(ram, player))
        nouns = {obj: self.object_noun(ram, obj) for obj in in_scope}
        nouns = {obj: noun for obj, noun in nouns.items() if noun}
        candidates = [direction for direction in DIRECTIONS if self._knows(direction)]
        for template in ONE_OBJECT_TEMPLATES:
            if self._knows(template):
                candidates.extend(template.format(a=noun) for noun in nouns.values())
        for template, held_slot in TWO_OBJECT_TEMPLATES:
            if not self._knows(template):
                continue
            for first, first_noun in nouns.items():
                for second, second_noun in nouns.items():
                    if first != second and (first if held_slot == "a" else second) in held:
                        candidates.append(template.format(a=first_noun, b=second_noun))
        return list(dict.fromkeys(candidates))

    # ----------------------------------------------------------------- valid actions
    def valid_actions(self) -> list[str]:
        """One candidate per distinct change of the world, leaving the game state as it was."""
        if self._global("deadflag") != 0:
            return []
        start_state = self._env.get_state()
        unchanged = {self._signature(start_state[0])}
        if self._knows(NO_OP_COMMAND):
            self._env.step(NO_OP_COMMAND)
            unchanged.add(self._signature(self._ram()))
        outcome_to_action: dict[bytes, str] = {}
        for action in self.candidate_actions_at(start_state):
            self._env.set_state(start_state)
            self._env.step(action)
            signature = self._signature(self._ram())
            if signature not in unchanged:
                outcome_to_action.setdefault(signature, action)
        self._env.set_state(start_state)
        return list(outcome_to_action.values())

    def candidate_actions_at(self, state: tuple) -> list[str]:
        self._env.set_state(state)
        return self.candidate_actions()
