"""Shape superclasses: an offline image-caption task where only the text links a class's members.

Twelve visually different shapes fall into four superclasses by an arbitrary
rule, and the label is the superclass. Shapes that look alike sit in
different superclasses (disc and ring, square and frame, plus and x, disc and
half-disc, square and diamond), so no augmentation of one member ever looks
like another member of its class: what ties a class together is that its
captions name the same superclass word ("fruit", "tool", "animal",
"vehicle", or a synonym), among nuisance words (colour, texture, size,
position) and fillers. The caption never names the member shape.

Nuisances outside the label: the colour (any hue), the texture (solid,
striped, checkered, dotted), the size (radius 28-42% of the side), the
position (anywhere the whole shape fits) and the background (grey level,
tint, gradient, noise). Objects are large, so the crops of the task's
augmentation (SimCLR's pipeline with crop scale >= 0.25) keep most of them.

This is the setting CLIP-guided SimCLR (Zhang, Wang and Wang, ICML 2023) is
about: two members of a class are never augmentations of each other, so
SimCLR alone has no reason to pull them together; a text-trained guide does.
Everything comes from one numpy generator seeded by the setting, so the data
are identical on every machine.

Each row keeps its member shape (the split extra `member`, 0-11; superclass =
member // 3), and the task's main score is `heldout_group_acc`
(harness.running.grouped): a linear probe fit on two members of every
superclass and scored on the third, rotated so each member is held out once
(fold k holds out members 3c + k: first disc, ring, plus, diamond; then frame,
square, triangle, bars; then x, star, crescent, half-disc), averaged over the
three folds. A representation that only tells shapes apart scores chance (25%)
there; one that links a class's members scores high. `test_acc`, the ordinary
superclass probe, stays beside it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from harness.api.task import Modality, Task, TaskData
from tasks.common.augment import augment_by_kind
from tasks.shapes import encode_caption, image_caption_splits, token_vocabulary

SUPERCLASSES = {  # look-alikes are split on purpose (see the module docstring)
    "fruit": ("disc", "frame", "x"),
    "tool": ("ring", "square", "star"),
    "animal": ("plus", "triangle", "crescent"),
    "vehicle": ("diamond", "bars", "half-disc"),
}
SHAPES = tuple(s for members in SUPERCLASSES.values() for s in members)
SUPERCLASS_WORDS = {"fruit": ("fruit", "food"), "tool": ("tool", "utensil"), "animal": ("animal", "creature"),
                    "vehicle": ("vehicle", "transport")}
COLOUR_WORDS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")  # by hue, in order
TEXTURES = ("solid", "striped", "checkered", "dotted")
TEXTURE_WORDS = {"solid": "plain", "striped": "striped", "checkered": "checkered", "dotted": "dotted"}
SIZE_WORDS = ("small", "big")
POSITION_WORDS = ("left", "right", "top", "bottom", "middle")
FILLERS = ("a", "the", "photo", "of", "picture", "image", "showing", "with", "an", "object", "drawn", "on",
           "background", "this", "is", "some", "thing", "here", "nice", "little")
CROP_SCALE = (0.25, 1.0)


def vocabulary() -> tuple[str, ...]:
    words = [w for pair in SUPERCLASS_WORDS.values() for w in pair]
    return token_vocabulary([*words, *COLOUR_WORDS, *TEXTURE_WORDS.values(), *SIZE_WORDS, *POSITION_WORDS, *FILLERS])


@dataclass(frozen=True)
class SuperclassSetting:
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    size: int = 32
    caption_length: int = 12
    drop_superclass_word: float = 0.05  # text is a strong hint, not an oracle
    seed: int = 0


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside `shape`, in coordinates scaled so that the shape spans [-1, 1]."""
    rho2 = u**2 + v**2
    if shape == "disc":
        return rho2 <= 1
    if shape == "ring":
        return (rho2 <= 1) & (rho2 >= 0.55**2)
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8
    if shape == "frame":
        return (np.maximum(abs(u), abs(v)) <= 0.85) & (np.maximum(abs(u), abs(v)) >= 0.5)
    if shape == "triangle":  # apex up
        return (v >= -1) & (v <= 1) & (abs(u) <= (v + 1) / 2)
    if shape == "plus":
        return ((abs(u) <= 0.3) & (abs(v) <= 1)) | ((abs(v) <= 0.3) & (abs(u) <= 1))
    if shape == "x":
        p, q = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
        return ((abs(p) <= 0.25) & (abs(q) <= 1)) | ((abs(q) <= 0.25) & (abs(p) <= 1))
    if shape == "diamond":
        return abs(u) + abs(v) <= 1
    if shape == "star":  # five points: the radius swings between 0.4 and 1 with the angle
        theta = np.arctan2(v, u) + np.pi / 2
        return np.sqrt(rho2) <= 0.4 + 0.6 * np.abs(np.cos(2.5 * theta)) ** 3
    if shape == "bars":  # three horizontal bars
        return (abs(u) <= 0.95) & (abs(v) <= 1) & (np.mod(v + 1, 0.8) < 0.4)
    if shape == "crescent":
        return (rho2 <= 1) & ((u - 0.45) ** 2 + v**2 > 0.75**2)
    if shape == "half-disc":
        return (rho2 <= 1) & (v >= 0)
    raise ValueError(f"unknown shape {shape}")


def texture_mask(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period = int(rng.integers(2, 4))
    if texture == "striped":
        return ((x + y) // period) % 2 == 0
    if texture == "checkered":
        return ((x // period) + (y // period)) % 2 == 0
    if texture == "dotted":
        return (x % (period + 1) != 0) | (y % (period + 1) != 0)
    return np.ones((size, size), dtype=bool)


@dataclass
class Scene:
    shape: int
    hue: float
    texture: int
    radius: float  # as a fraction of the side
    cx: float  # centre, as fractions of the side
    cy: float


def draw_scene(rng: np.random.Generator) -> Scene:
    radius = rng.uniform(0.28, 0.42)
    return Scene(int(rng.integers(len(SHAPES))), float(rng.random()), int(rng.integers(len(TEXTURES))), radius,
                 rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius))


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (3, size, size) float image in [0, 1]: a textured shape on a tinted, graded, noisy background."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) / size
    tint = rng.uniform(-0.08, 0.08, 3)[:, None, None]
    gradient = rng.uniform(-0.15, 0.15) * (x - 0.5) + rng.uniform(-0.15, 0.15) * (y - 0.5)
    background = rng.uniform(0.0, 0.4) + tint + gradient + rng.normal(0, rng.uniform(0.02, 0.07), (3, size, size))
    inside = shape_mask(SHAPES[scene.shape], (x - scene.cx) / scene.radius, (y - scene.cy) / scene.radius)
    paint = inside & texture_mask(TEXTURES[scene.texture], size, rng)
    faded = inside & ~paint
    colour = np.array(colorsys.hsv_to_rgb(scene.hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)))
    image = background
    image[:, paint] = colour[:, None]
    image[:, faded] = 0.5 * colour[:, None] + 0.5 * image[:, faded]  # off-texture pixels stay tinted
    return np.clip(image, 0, 1).astype(np.float32)


def superclass_of(shape: int) -> int:
    return shape // 3


def position_word(scene: Scene) -> str:
    dx, dy = scene.cx - 0.5, scene.cy - 0.5
    if max(abs(dx), abs(dy)) < 0.07:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def caption(scene: Scene, setting: SuperclassSetting, rng: np.random.Generator) -> list[str]:
    superclass = list(SUPERCLASSES)[superclass_of(scene.shape)]
    words = []
    if rng.random() >= setting.drop_superclass_word:
        words.append(str(rng.choice(SUPERCLASS_WORDS[superclass])))
    nuisances = [COLOUR_WORDS[int(scene.hue * len(COLOUR_WORDS)) % len(COLOUR_WORDS)],
                 TEXTURE_WORDS[TEXTURES[scene.texture]], SIZE_WORDS[int(scene.radius > 0.35)], position_word(scene)]
    words += [w for w in nuisances if rng.random() < 0.6]
    words += [str(w) for w in rng.choice(FILLERS, size=int(rng.integers(2, 6)))]
    rng.shuffle(words)
    return words[: setting.caption_length]


@lru_cache(maxsize=8)
def views_pipeline(height: int, width: int) -> nn.Sequential:
    """SimCLR's image augmentations with crops of at least a quarter of the image, so the object survives."""
    return nn.Sequential(
        K.RandomResizedCrop((height, width), scale=CROP_SCALE),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
    )


class ShapeSuperclasses(Task):
    name = "shapes-superclasses"
    version = "2"  # 2: keeps each row's member shape and is scored on held-out members (heldout_group_acc)
    suite = "image"
    description = ("Generated 32x32 images of 12 shapes in 4 arbitrary superclasses (the label); captions name "
                   "the superclass among nuisance words, so only text links a class's members. 6000/1000/2000 rows.")
    label_kind = "multiclass"
    default_epochs = 21  # 47 steps of 128 per epoch: about 1000 optimizer steps
    default_batch_size = 128
    setting = SuperclassSetting()
    # A linear probe on the superclass can be won by telling the 12 shapes apart (any labelling of separable
    # clusters is linear), so the headline is a probe scored on member shapes it never saw (harness.running.grouped).
    group_extra = "member"
    main_score = "heldout_group_acc"
    side_scores = ("heldout_group_knn", "test_acc")

    @property
    def modalities(self) -> tuple[Modality, ...]:
        s = self.setting
        # The narrow CNN keeps ~1000 SimCLR steps within minutes on a CPU core (see default_epochs).
        return (Modality("image", "image", (3, s.size, s.size), encoder="small-cnn-narrow"),
                Modality("caption", "tokens", (s.caption_length,), vocab_size=len(vocabulary())))

    @property
    def num_classes(self) -> int:
        return len(SUPERCLASSES)

    def identity(self):
        return super().identity() | {"params": {"setting": self.setting.__dict__}}

    def generate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Images, captions, superclass labels and member shapes, from the setting's seed alone."""
        s = self.setting
        rng = np.random.default_rng(s.seed)
        index = {w: i for i, w in enumerate(vocabulary())}
        images, captions, shapes = [], [], []
        for _ in range(s.n_train + s.n_val + s.n_test):
            scene = draw_scene(rng)
            images.append(render(scene, s.size, rng))
            captions.append(encode_caption(caption(scene, s, rng), index, s.caption_length))
            shapes.append(scene.shape)
        shapes_array = np.array(shapes, dtype=np.int64)
        return np.stack(images), np.stack(captions), shapes_array // 3, shapes_array

    def load(self) -> TaskData:
        images, captions, labels, shapes = self.generate()
        return image_caption_splits(images, captions, labels, self.setting, {self.group_extra: shapes})

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if self.modality(modality).kind == "image":
            return views_pipeline(x.shape[-2], x.shape[-1])(x.float()).clamp(0.0, 1.0)
        return augment_by_kind(self.modality(modality).kind, x)
