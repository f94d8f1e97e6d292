"""Shape superclasses: an image-only target and a disjoint image-caption pool a guide pretrains on.

Twelve visually different shapes fall into four superclasses by an arbitrary
rule (an assignment), and the label is the superclass. Shapes that look alike
sit in different superclasses in every assignment (disc and ring, square and
frame, plus and x, disc and half-disc, square and diamond: LOOK_ALIKES), so no
augmentation of one member ever looks like another member of its class.

The paper's setting (Zhang, Wang and Wang, ICML 2023): the guide is trained
on outside image-text data and the target has no text. So the target task
(`shapes-superclasses`) is image-only: its rows carry an image, the label and
the member, and no caption exists for any of them. The guide's pretraining
pool (`guide_pool()`, SuperclassCaptionPool) is `pool_size` (6000)
image-caption pairs drawn by their own generator (numpy's SeedSequence of
`pool_seed`, 1, spawned into an image stream and a caption stream; the target
draws from default_rng(`seed`), 0), so it holds other instances of the same
twelve shapes, never a target row (tests/test_guide_pool.py compares every
array). A pool caption names the superclass ("fruit", "tool", "animal",
"vehicle", or a synonym) with probability `class_word_rate` (0.95 by default),
among nuisance words (colour, texture, size, position) and fillers; it never
names the member shape. The pool's images come from the image stream alone, so
pools of different rates hold the same images and differ only in their text.

Nuisances outside the label: the colour (any hue), the texture (solid,
striped, checkered, dotted), the size (radius 28-42% of the side), the
position (anywhere the whole shape fits) and the background (grey level,
tint, gradient, noise). Objects are large, so the crops of the task's
augmentation (SimCLR's pipeline with crop scale >= 0.25) keep most of them.

Each row keeps its member (the split extra `member`: 3c + k for the k-th
member the assignment lists under superclass c, so superclass = member // 3
in every assignment), and the task's main score is `heldout_group_acc`
(harness.running.grouped): a linear probe fit on two members of every
superclass and scored on the third, rotated so each member is held out once
(fold k holds out members 3c + k, the k-th listed of each superclass). The
held-out members are unseen by the probe's labels only: the student trains
on every target image and the guide's pool holds images of all twelve
shapes (each record's `notes` say so). A representation that only tells
shapes apart scores chance (25%) there; one that links a class's members
scores high. `test_acc`, the ordinary superclass probe, stays beside it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from functools import lru_cache

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from harness.api.errors import HarnessError
from harness.api.task import Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind
from tasks.shapes import encode_caption, token_vocabulary

# The shapes in a fixed order: a scene draws one uniformly, whatever the assignment.
SHAPES = ("disc", "frame", "x", "ring", "square", "star", "plus", "triangle", "crescent", "diamond", "bars",
          "half-disc")
SUPERCLASS_NAMES = ("fruit", "tool", "animal", "vehicle")
# Pairs of shapes that look alike (by mask overlap, tests/test_image_track.py): no assignment puts one in a class.
LOOK_ALIKES = (("disc", "ring"), ("square", "frame"), ("plus", "x"), ("disc", "half-disc"), ("square", "diamond"))
# Member-to-superclass assignments, by number: each superclass's members in SUPERCLASS_NAMES' order. Assignment 1
# is version 2's; 2 and 3 share no superclass with it or each other. The k-th listed member of every superclass
# is held out in fold k.
ASSIGNMENTS = {
    1: (("disc", "frame", "x"), ("ring", "square", "star"), ("plus", "triangle", "crescent"),
        ("diamond", "bars", "half-disc")),
    2: (("disc", "square", "bars"), ("ring", "diamond", "crescent"), ("frame", "plus", "half-disc"),
        ("x", "triangle", "star")),
    3: (("ring", "diamond", "bars"), ("disc", "frame", "plus"), ("square", "x", "crescent"),
        ("half-disc", "triangle", "star")),
}
SUPERCLASSES = dict(zip(SUPERCLASS_NAMES, ASSIGNMENTS[1]))  # the default assignment, by name
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


def member_of_shape(assignment: int) -> np.ndarray:
    """For each shape id (its place in SHAPES), its member id under the assignment: 3c + k for the k-th member
    listed under superclass c."""
    if assignment not in ASSIGNMENTS:
        raise HarnessError(f"superclass assignment {assignment}: choose one of {sorted(ASSIGNMENTS)}")
    members = np.empty(len(SHAPES), dtype=np.int64)
    for c, listed in enumerate(ASSIGNMENTS[assignment]):
        for k, shape in enumerate(listed):
            members[SHAPES.index(shape)] = 3 * c + k
    return members


@dataclass(frozen=True)
class SuperclassSetting:
    # The target: image-only rows from default_rng(seed).
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    size: int = 32
    seed: int = 0
    assignment: int = 1  # a key of ASSIGNMENTS
    # The guide's pool: image-caption pairs from SeedSequence(pool_seed)'s own streams, never a target row.
    pool_size: int = 6000
    pool_seed: int = 1
    caption_length: int = 12
    class_word_rate: float = 0.95  # the share of pool captions naming the superclass: text is a strong hint

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_word_rate <= 1.0:
            raise HarnessError(f"class_word_rate {self.class_word_rate}: a share of captions, between 0 and 1")
        member_of_shape(self.assignment)  # an unknown assignment fails here, in one line


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


def position_word(scene: Scene) -> str:
    dx, dy = scene.cx - 0.5, scene.cy - 0.5
    if max(abs(dx), abs(dy)) < 0.07:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def caption(scene: Scene, superclass: int, setting: SuperclassSetting, rng: np.random.Generator) -> list[str]:
    """At most 10 words (the superclass word, 4 nuisances, 2-5 fillers), so `caption_length` 12 never cuts one."""
    words = []
    if rng.random() < setting.class_word_rate:
        words.append(str(rng.choice(SUPERCLASS_WORDS[SUPERCLASS_NAMES[superclass]])))
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


def scenes(n: int, size: int, rng: np.random.Generator) -> tuple[list[Scene], np.ndarray]:
    """n scenes and their rendered images, every draw from `rng`."""
    drawn, images = [], []
    for _ in range(n):
        scene = draw_scene(rng)
        drawn.append(scene)
        images.append(render(scene, size, rng))
    return drawn, np.stack(images)


def split_of(inputs: dict[str, np.ndarray], members: np.ndarray, rows: slice) -> TensorSplit:
    """Rows of generated arrays as a split: the label is the superclass, member // 3; the member is the extra."""
    return TensorSplit({name: torch.from_numpy(values[rows]) for name, values in inputs.items()},
                       torch.from_numpy(members[rows] // 3), {"member": torch.from_numpy(members[rows])})


def describe(setting: SuperclassSetting) -> str:
    s = setting
    return (f"Generated {s.size}x{s.size} images of 12 shapes in 4 arbitrary superclasses (the label; assignment "
            f"{s.assignment}), image-only: {s.n_train}/{s.n_val}/{s.n_test} rows from seed {s.seed}. The guide "
            f"pretrains on a disjoint pool of {s.pool_size} image-caption pairs (seed {s.pool_seed}) whose captions "
            f"name the superclass at rate {s.class_word_rate:g}; held-out members are unseen by the probe's labels.")


class ShapeScenes(Task):
    """What the target and its pool share: the scenes, their labels, the encoder and the views."""

    suite = "image"
    label_kind = "multiclass"
    default_epochs = 21  # 47 steps of 128 per epoch: about 1000 optimizer steps
    default_batch_size = 128
    setting = SuperclassSetting()

    @property
    def image(self) -> Modality:
        # The narrow CNN keeps ~1000 SimCLR steps within minutes on a CPU core (see default_epochs).
        return Modality("image", "image", (3, self.setting.size, self.setting.size), encoder="small-cnn-narrow")

    @property
    def num_classes(self) -> int:
        return len(SUPERCLASS_NAMES)

    def identity(self):
        return super().identity() | {"params": {"setting": self.setting.__dict__}}

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if self.modality(modality).kind == "image":
            return views_pipeline(x.shape[-2], x.shape[-1])(x.float()).clamp(0.0, 1.0)
        return augment_by_kind(self.modality(modality).kind, x)


class SuperclassCaptionPool(ShapeScenes):
    """The guide's pretraining pool for a target's setting: `pool_size` image-caption pairs, all in `train`.

    Images from the first stream spawned by SeedSequence(pool_seed), captions from the second; the assignment
    (and so the labels and member ids) is the target's. Not registered: a target hands it out (guide_pool)."""

    name = "shapes-superclasses-pool"
    version = "1"
    group_extra = "member"

    def __init__(self, setting: SuperclassSetting, data_dir=None):
        super().__init__(data_dir)
        self.setting = setting
        s = setting
        self.description = (f"{s.pool_size} generated image-caption pairs of the 12 shapes (assignment "
                            f"{s.assignment}) from their own generator (seed {s.pool_seed}); captions name the "
                            f"superclass at rate {s.class_word_rate:g}")

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (self.image, Modality("caption", "tokens", (self.setting.caption_length,),
                                     vocab_size=len(vocabulary())))

    def generate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images, captions and member ids; the images from their own stream, whatever the captions say."""
        s = self.setting
        streams = np.random.SeedSequence(s.pool_seed).spawn(2)
        image_rng, caption_rng = (np.random.default_rng(stream) for stream in streams)
        drawn, images = scenes(s.pool_size, s.size, image_rng)
        members = member_of_shape(s.assignment)[[scene.shape for scene in drawn]]
        index = {w: i for i, w in enumerate(vocabulary())}
        captions = np.stack([encode_caption(caption(scene, int(member) // 3, s, caption_rng), index, s.caption_length)
                             for scene, member in zip(drawn, members)])
        return images, captions, members

    def load(self) -> TaskData:
        images, captions, members = self.generate()
        train = split_of({"image": images, "caption": captions}, members, slice(None))
        none = train.take(torch.arange(0))
        return TaskData(train=train, val=none, test=none)


class ShapeSuperclasses(ShapeScenes):
    name = "shapes-superclasses"
    # 2: keeps each row's member shape and is scored on held-out members (heldout_group_acc)
    # 3: image-only (no caption of the target enters any training, as in the paper, whose target has no text);
    #    the guide trains on a disjoint image-caption pool (guide_pool) with a stated class-word rate, and member
    #    ids follow the assignment. Version 2's guide trained on the target's own rows, captions included.
    version = "3"
    setting = SuperclassSetting()
    description = describe(setting)
    # A linear probe on the superclass can be won by telling the 12 shapes apart (any labelling of separable
    # clusters is linear), so the headline is a probe scored on members its labels never showed it
    # (harness.running.grouped).
    group_extra = "member"
    main_score = "heldout_group_acc"
    side_scores = ("heldout_group_knn", "test_acc")

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (self.image,)

    def guide_pool(self) -> SuperclassCaptionPool:
        return SuperclassCaptionPool(self.setting)

    def generate(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and member ids, from default_rng(seed) alone."""
        s = self.setting
        drawn, images = scenes(s.n_train + s.n_val + s.n_test, s.size, np.random.default_rng(s.seed))
        return images, member_of_shape(s.assignment)[[scene.shape for scene in drawn]]

    def load(self) -> TaskData:
        images, members = self.generate()
        s = self.setting
        bounds = np.cumsum([0, s.n_train, s.n_val, s.n_test])
        train, val, test = (split_of({"image": images}, members, slice(bounds[i], bounds[i + 1])) for i in range(3))
        return TaskData(train=train, val=val, test=test)


# Variants for the dose-response (the share of pool captions naming the superclass; the target rows, the pool's
# images and everything else are the default task's) and for the assignments (the same images, other labels).
def _variant(class_name: str, name: str, **changes) -> type[ShapeSuperclasses]:
    """The default task with `changes` to its setting, registered as `name` (a module-level class, so that a
    registry target and a spawned worker find it by `class_name`)."""
    setting = replace(ShapeSuperclasses.setting, **changes)
    return type(class_name, (ShapeSuperclasses,), {"name": name, "setting": setting, "description": describe(setting),
                                                   "__module__": __name__, "__qualname__": class_name})


ClassWords0 = _variant("ClassWords0", "shapes-superclasses-class-words-0", class_word_rate=0.0)
ClassWords32 = _variant("ClassWords32", "shapes-superclasses-class-words-32", class_word_rate=0.32)
ClassWords63 = _variant("ClassWords63", "shapes-superclasses-class-words-63", class_word_rate=0.63)
Assignment2 = _variant("Assignment2", "shapes-superclasses-assignment-2", assignment=2)
Assignment3 = _variant("Assignment3", "shapes-superclasses-assignment-3", assignment=3)
