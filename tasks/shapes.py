"""Shapes with captions: an offline image-caption task that needs no download.

Each sample is one shape drawn on a noisy background. The class is (shape,
colour): 4 shapes x 3 colours = 12 classes. Nuisances vary freely: position,
size, texture (solid, striped, checkered), the shade of the colour, and the
background's brightness and noise. The caption names the shape and the colour
(each dropped with a small probability, so text is informative but not an
oracle), some of the nuisances, and filler words, in a shuffled order:
"photo big crimson disc striped the left".

Everything comes from one numpy generator with a fixed seed, so the data are
identical on every machine. Small on purpose: 32x32 images, 3000 samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.api.task import Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind
from tasks.common.image_augment import MASK_ID, PAD_ID

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0.85, 0.15, 0.1), "green": (0.15, 0.75, 0.2), "blue": (0.15, 0.3, 0.9)}
TEXTURES = ("solid", "striped", "checkered")
SHAPE_WORDS = {"circle": ("circle", "disc", "round"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "wedge"), "cross": ("cross", "plus")}
COLOUR_WORDS = {"red": ("red", "crimson"), "green": ("green", "lime"), "blue": ("blue", "navy")}
TEXTURE_WORDS = {"solid": ("plain", "solid"), "striped": ("striped", "lined"), "checkered": ("checkered", "tiled")}
SIZE_WORDS = ("small", "big")
POSITION_WORDS = ("left", "right", "top", "bottom", "middle")
FILLERS = ("a", "the", "photo", "of", "picture", "image", "showing", "with", "an", "object", "drawn", "on",
           "dark", "background", "this", "is", "some", "thing", "here")


def vocabulary() -> tuple[str, ...]:
    words = [w for group in (*SHAPE_WORDS.values(), *COLOUR_WORDS.values(), *TEXTURE_WORDS.values()) for w in group]
    return token_vocabulary([*words, *SIZE_WORDS, *POSITION_WORDS, *FILLERS])


def token_vocabulary(words: list[str]) -> tuple[str, ...]:
    """The caption tokens: padding and mask first, at the ids the augmentations expect, then the words sorted."""
    specials = ["<pad>", "<mask>"]
    assert specials.index("<pad>") == PAD_ID and specials.index("<mask>") == MASK_ID
    return tuple(specials + sorted(set(words)))


@dataclass(frozen=True)
class ShapesSetting:
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    size: int = 32
    caption_length: int = 12
    drop_class_word: float = 0.1  # chance that the caption omits the shape word (and, independently, the colour)
    seed: int = 0


@dataclass
class Scene:
    """The latent description of one sample."""

    shape: int
    colour: int
    texture: int
    radius: float
    cx: float
    cy: float


def draw_scene(rng: np.random.Generator, size: int) -> Scene:
    radius = rng.uniform(0.15, 0.3) * size
    margin = radius + 1
    return Scene(int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(len(TEXTURES))),
                 radius, rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))


def shape_mask(scene: Scene, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy, r = x - scene.cx, y - scene.cy, scene.radius
    name = SHAPES[scene.shape]
    if name == "circle":
        return dx**2 + dy**2 <= r**2
    if name == "square":
        side = r * 0.85  # equal area with the circle would be 0.89r; slightly smaller keeps them distinct
        return (np.abs(dx) <= side) & (np.abs(dy) <= side)
    if name == "triangle":  # apex up: the half-width grows linearly from the apex to the base
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    bar = r / 3
    return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))


def texture_mask(texture: int, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period = int(rng.integers(2, 4))
    if TEXTURES[texture] == "striped":
        return ((x + y) // period) % 2 == 0
    if TEXTURES[texture] == "checkered":
        return ((x // period) + (y // period)) % 2 == 0
    return np.ones((size, size), dtype=bool)


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (3, size, size) float image in [0, 1]."""
    background = rng.uniform(0.05, 0.35) + rng.normal(0, 0.04, (3, size, size))
    colour = np.clip(np.array(list(COLOURS.values())[scene.colour]) + rng.normal(0, 0.07, 3), 0, 1)
    paint = shape_mask(scene, size) & texture_mask(scene.texture, size, rng)
    faded = shape_mask(scene, size) & ~paint
    image = background.copy()
    image[:, paint] = colour[:, None]
    image[:, faded] = 0.5 * colour[:, None] + 0.5 * image[:, faded]  # off-texture pixels stay tinted
    return np.clip(image, 0, 1).astype(np.float32)


def position_word(scene: Scene, size: int) -> str:
    dx, dy = scene.cx / size - 0.5, scene.cy / size - 0.5
    if max(abs(dx), abs(dy)) < 0.1:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def caption(scene: Scene, size: int, setting: ShapesSetting, rng: np.random.Generator) -> list[str]:
    shape, colour = SHAPES[scene.shape], list(COLOURS)[scene.colour]
    words = []
    if rng.random() >= setting.drop_class_word:
        words.append(str(rng.choice(SHAPE_WORDS[shape])))
    if rng.random() >= setting.drop_class_word:
        words.append(str(rng.choice(COLOUR_WORDS[colour])))
    nuisances = [str(rng.choice(TEXTURE_WORDS[TEXTURES[scene.texture]])),
                 SIZE_WORDS[int(scene.radius > 0.225 * size)], position_word(scene, size)]
    words += [w for w in nuisances if rng.random() < 0.5]
    words += [str(w) for w in rng.choice(FILLERS, size=int(rng.integers(2, 6)))]
    rng.shuffle(words)
    return words[: setting.caption_length]


def encode_caption(words: list[str], index: dict[str, int], length: int) -> np.ndarray:
    ids = np.full(length, PAD_ID, dtype=np.int64)
    ids[: len(words)] = [index[w] for w in words]
    return ids


class ShapesCaptions(Task):
    name = "shapes-captions"
    version = "1"
    suite = "image"
    description = "Generated 32x32 shapes (12 shape x colour classes) with noisy captions; offline image-caption task."
    label_kind = "multiclass"
    default_epochs = 20
    default_batch_size = 256
    setting = ShapesSetting()

    @property
    def modalities(self) -> tuple[Modality, ...]:
        s = self.setting
        return (Modality("image", "image", (3, s.size, s.size)),
                Modality("caption", "tokens", (s.caption_length,), vocab_size=len(vocabulary())))

    @property
    def num_classes(self) -> int:
        return len(SHAPES) * len(COLOURS)

    def identity(self):
        return super().identity() | {"params": {"setting": self.setting.__dict__}}

    def generate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images (n, 3, size, size), captions (n, length) and labels (n,), from the setting's seed alone."""
        s = self.setting
        rng = np.random.default_rng(s.seed)
        index = {w: i for i, w in enumerate(vocabulary())}
        n = s.n_train + s.n_val + s.n_test
        images, captions, labels = [], [], []
        for _ in range(n):
            scene = draw_scene(rng, s.size)
            images.append(render(scene, s.size, rng))
            captions.append(encode_caption(caption(scene, s.size, s, rng), index, s.caption_length))
            labels.append(scene.shape * len(COLOURS) + scene.colour)
        return np.stack(images), np.stack(captions), np.array(labels, dtype=np.int64)

    def load(self) -> TaskData:
        images, captions, labels = self.generate()
        return image_caption_splits(images, captions, labels, self.setting)

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return augment_by_kind(self.modality(modality).kind, x)


def image_caption_splits(images: np.ndarray, captions: np.ndarray, labels: np.ndarray, setting,
                         extras: dict[str, np.ndarray] | None = None) -> TaskData:
    """Generated rows cut, in order, into the setting's n_train, n_val and n_test rows; `extras` are per-row
    side data cut alike."""
    bounds = np.cumsum([0, setting.n_train, setting.n_val, setting.n_test])

    def split(start: int, stop: int) -> TensorSplit:
        return TensorSplit({"image": torch.from_numpy(images[start:stop]),
                            "caption": torch.from_numpy(captions[start:stop])},
                           torch.from_numpy(labels[start:stop]),
                           {name: torch.from_numpy(values[start:stop]) for name, values in (extras or {}).items()})

    return TaskData(train=split(bounds[0], bounds[1]), val=split(bounds[1], bounds[2]),
                    test=split(bounds[2], bounds[3]))
