"""CLIP-guided SimCLR (Zhang, Wang and Wang, ICML 2023): a frozen guide reshapes SimCLR's positives and negatives.

SimCLR exactly as the `simclr` row (same image encoder, views, projector and
NT-Xent; the student trains on and is probed on images alone, so a caption
reaches it only through the guide), plus a frozen guide
(methods.common.guides) that embeds the same augmented image views each step.
The cosine similarities of those guide embeddings within the batch drive one
variant:

- add-new-positive: each view's nearest guide neighbour (not itself, not its
  own partner) is an extra positive; the loss is the mean of the usual term
  and the neighbour's term.
- drop-false-negative: each anchor's top `fraction` (5%) most guide-similar
  negatives leave its denominator.
- drop-easy-negative: its bottom `fraction` (10%) least similar leave it.
- drop-false-positive: augmentation pairs whose guide similarity is in the
  lowest `fraction` (10%) of the batch are dropped from the loss. (The public
  code computes this mask and never applies it; this applies it.)

How many negatives the drop variants remove follows the public code: it ranks
a view's whole row of 2B guide similarities, itself and its partner included,
and drops the negatives among the top (or bottom) k = int(fraction * 2B). With
B = 256 and 5%, k = 25 and, as itself and its partner almost always rank
first, 23 negatives go (not 25, which counting only negatives would give).

Before training, `prepare` measures the guide (how often a view's nearest
guide neighbour in a training-size batch of augmented views links it: has its
class and, where the task names member groups, another member; against the
chance rate a random neighbour has, from the group sizes) and
`check_assumptions` reports it on every record beside the old same-class
figure. The gate is chance plus `guide_gate_sd` (3) binomial standard
deviations for the rows measured: a guide below it fails the check, so its
run is marked, never silently used.

Three controls sit beside the CLIP guide: the group oracle (the new positive is
a random sample of the same member: near-duplicates, no linking), an image-only
guide (the harness's SimCLR trained with the CLIP guide's recipe on the same
rows: no text) and a random guide (the default image encoder, untrained).
Controls are not gated (`guide_gate_sd` None): their figures are recorded, but
no assumption of theirs rests on them. The label oracle is a reference, not a
bound. A trained guide learns from the task's guide pool where it has one
(Task.guide_pool: rows drawn apart from the task's), and each record's `notes`
say what the guide was built from and which of the task's members its pool
held (`record_notes`).

Labels never enter the loss (except through the `oracle` guide, a reference,
and member groups only through the `group-oracle` control). They only feed
diagnostics, logged per epoch: how often a guide-chosen positive has another
class, how diverse chosen positives are, and how often dropped negatives share
the anchor's class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.api.distributed import gather
from harness.api.errors import HarnessError
from harness.api.method import AssumptionCheck, InputModalities, Requirements
from harness.api.space import Interval, OneOf
from harness.api.task import Split, Task
from methods.common.guides import (
    GUIDE_DEFAULTS,
    GUIDE_DOMAINS,
    GUIDE_SEED_OFFSET,
    build_guide,
    guide_recipe,
    image_modality,
)
from methods.common.losses import nt_xent_logits
from methods.common.vision_text import image_modalities
from methods.simclr import SimCLR

VARIANTS = ("add-new-positive", "drop-false-negative", "drop-easy-negative", "drop-false-positive")
DEFAULT_FRACTION = {"drop-false-negative": 0.05, "drop-easy-negative": 0.10, "drop-false-positive": 0.10}
GUIDE_GATE_SD = 3.0  # binomial standard deviations above chance a guide's linking share must reach
QUALITY_ROWS = 2048  # training rows the guide's quality is measured on


def guide_similarity(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between all 2B guide embeddings, in nt_xent_logits' row order."""
    g = F.normalize(torch.cat([g1, g2]).float(), dim=1)
    return g @ g.T


def partners(n: int, device: torch.device) -> torch.Tensor:
    """Each view's augmentation partner among the 2n views, in nt_xent_logits' row order."""
    return torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(device)


def negative_candidates(positives: torch.Tensor) -> torch.Tensor:
    """(2B, 2B) mask of each row's negatives: everything but itself and its augmentation partner."""
    n = len(positives)
    own = torch.eye(n, dtype=torch.bool, device=positives.device)
    own[torch.arange(n, device=positives.device), positives] = True
    return ~own


def add_new_positive(logits, positives, sim, candidates, same_class):
    neighbour = sim.masked_fill(~candidates, float("-inf")).argmax(dim=1)
    loss = (F.cross_entropy(logits, positives) + F.cross_entropy(logits, neighbour)) / 2
    rows = torch.arange(len(sim), device=sim.device)
    return loss, {
        "guide_positive_label_error": (~same_class[rows, neighbour]).float().mean(),
        "guide_positive_diversity": (1 - sim[rows, neighbour]).mean(),
        "augmentation_positive_diversity": (1 - sim[rows, positives]).mean(),
    }


def dropped_negatives(sim: torch.Tensor, candidates: torch.Tensor, fraction: float, most_similar: bool):
    """The negatives among each row's k = int(fraction * 2B) highest (or lowest) guide similarities, as a mask.

    The whole row is ranked, the view itself and its partner included, as the public code counts k.
    """
    k = max(1, int(fraction * sim.shape[1]))
    chosen = sim.topk(k, dim=1, largest=most_similar).indices
    return torch.zeros_like(candidates).scatter_(1, chosen, True) & candidates


def drop_negatives(logits, positives, sim, candidates, same_class, fraction: float, most_similar: bool):
    dropped = dropped_negatives(sim, candidates, fraction, most_similar)
    loss = F.cross_entropy(logits.masked_fill(dropped, float("-inf")), positives)
    return loss, {
        "dropped_negative_same_class": same_class[dropped].float().mean(),
        "negative_same_class": same_class[candidates].float().mean(),  # the base rate to compare with
    }


def dropped_pairs(pair_sim: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask of the augmentation pairs whose guide similarity is among the lowest `fraction` (at least one kept)."""
    k = min(int(round(fraction * len(pair_sim))), len(pair_sim) - 1)
    dropped = torch.zeros_like(pair_sim, dtype=torch.bool)
    dropped[pair_sim.argsort()[:k]] = True
    return dropped


def drop_false_positive(logits, positives, sim, fraction: float):
    n = len(positives) // 2
    pair_sim = sim[torch.arange(n, device=sim.device), torch.arange(n, 2 * n, device=sim.device)]
    dropped = dropped_pairs(pair_sim, fraction)
    per_row = F.cross_entropy(logits, positives, reduction="none")
    loss = per_row[~torch.cat([dropped, dropped])].mean()
    nan = torch.tensor(float("nan"), device=sim.device)
    return loss, {
        "dropped_pair_diversity": (1 - pair_sim[dropped]).mean() if dropped.any() else nan,
        "augmentation_positive_diversity": (1 - pair_sim).mean(),
    }


def guided_nt_xent(z1: torch.Tensor, z2: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, labels: torch.Tensor,
                   variant: str, fraction: float, temperature: float) -> dict[str, torch.Tensor]:
    """The variant's loss on projections z1, z2 and guide embeddings g1, g2 of the same views, with diagnostics."""
    logits, positives = nt_xent_logits(z1, z2, temperature)
    with torch.no_grad():
        sim = guide_similarity(g1, g2)
        both = torch.cat([labels, labels])
        same_class = both[:, None] == both[None, :]
    candidates = negative_candidates(positives)
    if variant == "add-new-positive":
        loss, diagnostics = add_new_positive(logits, positives, sim, candidates, same_class)
    elif variant in ("drop-false-negative", "drop-easy-negative"):
        loss, diagnostics = drop_negatives(logits, positives, sim, candidates, same_class, fraction,
                                           most_similar=variant == "drop-false-negative")
    elif variant == "drop-false-positive":
        loss, diagnostics = drop_false_positive(logits, positives, sim, fraction)
    else:
        raise HarnessError(f"variant '{variant}': choose one of {', '.join(VARIANTS)}")
    return {"loss": loss, **{k: v.detach() for k, v in diagnostics.items()}}


@dataclass(frozen=True)
class GuideQuality:
    """How often a view's nearest guide neighbour (not itself, not its partner) links it to its class.

    On a task with member groups (Task.group_extra), linking is sharing the class with a *different* member:
    a neighbour of the same member is a visual near-duplicate that augmentation might have found anyway, and
    a guide that finds only those (the group oracle) scores 0 however often it "shares the class". Without
    groups, linking is sharing the class. `same_class` and its chance `base_rate` are kept either way.
    """

    same_class: float
    base_rate: float  # the same-class share among all the candidates: what a guide at chance scores
    rows: int
    linking: float | None = None  # same class, different member; None without member groups
    linking_chance: float | None = None  # its rate for a random other row, from the group sizes

    @property
    def measured(self) -> tuple[float, float]:
        """(the figure the gate reads, its chance rate)."""
        if self.linking is not None:
            return self.linking, float(self.linking_chance)
        return self.same_class, self.base_rate

    def gate(self, sd: float) -> float:
        """Chance plus `sd` binomial standard deviations for this many rows: above it, no chance guide lands."""
        _, chance = self.measured
        return chance + sd * math.sqrt(chance * (1 - chance) / self.rows)

    def check(self, sd: float | None) -> AssumptionCheck:
        figure, chance = self.measured
        what = ("has its class and a different member" if self.linking is not None else "shares the class")
        old = (f"; same class {100 * self.same_class:.1f}%, chance {100 * self.base_rate:.1f}%"
               if self.linking is not None else "")
        if sd is None:  # a control built not to link: the figures are recorded, no assumption rests on them
            detail = (f"the guide's nearest neighbour on augmented views {what} {100 * figure:.1f}% of the time "
                      f"(chance {100 * chance:.1f}%, not gated: a control{old}, {self.rows} rows)")
            return AssumptionCheck("guide_quality", True, detail, round(figure, 4))
        gate = self.gate(sd)
        held = figure >= gate
        detail = (f"the guide's nearest neighbour on augmented views {what} {100 * figure:.1f}% of the time "
                  f"(chance {100 * chance:.1f}%, gate {100 * gate:.1f}% = chance + {sd:g} sd{old}, {self.rows} rows)"
                  + ("" if held else "; below the gate: it links no more than a guide at chance might"))
        return AssumptionCheck("guide_quality", held, detail, round(figure, 4))


def linking_chance(labels: torch.Tensor, groups: torch.Tensor) -> float:
    """P(a random other row has the class and another member), from the sizes of the (class, member) groups."""
    n = len(labels)
    class_size = torch.bincount(labels.long())[labels.long()].double()
    _, group_codes = torch.unique(groups.long(), return_inverse=True)
    group_size = torch.bincount(group_codes)[group_codes].double()
    return float(((class_size - group_size) / (n - 1)).mean())


@torch.no_grad()
def measure_guide(guide, task: Task, train: Split, image: str, batch_size: int, seed: int,
                  device: torch.device) -> GuideQuality:
    """The guide's nearest-neighbour precision, as add-new-positive would use it, before any training.

    Batches of the training size, two fresh augmented views per row, neighbours within the batch;
    in a forked RNG, so the run's own augmentations and weights stay what they would be without it.
    """
    extra = task.group_extra
    groups = train.extras[extra] if extra is not None and extra in train.extras else None
    hits, linked, chance, views = 0.0, 0.0, 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        for inputs, labels, rows in train.batches(batch_size, shuffle=True, generator=order):
            if views >= 2 * QUALITY_ROWS:
                break
            if len(labels) < 2:
                continue
            x = inputs[image].to(device)
            g1, g2 = guide(task.augment(image, x), rows), guide(task.augment(image, x), rows)
            sim = guide_similarity(g1, g2)
            both = torch.cat([labels, labels]).to(device)
            same_class = both[:, None] == both[None, :]
            candidates = negative_candidates(partners(len(labels), device))
            neighbour = sim.masked_fill(~candidates, float("-inf")).argmax(dim=1)
            every = torch.arange(len(both), device=device)
            hits += float(same_class[every, neighbour].float().sum())
            if groups is not None:
                member = torch.cat([groups[rows], groups[rows]]).to(device)
                linked += float((same_class[every, neighbour] & (member != member[neighbour])).float().sum())
            chance += float((same_class & candidates).sum(1).float().div(candidates.sum(1)).sum())
            views += len(both)
    if groups is None:
        return GuideQuality(hits / views, chance / views, views // 2)
    return GuideQuality(hits / views, chance / views, views // 2, linked / views,
                        linking_chance(train.labels, groups))


class ClipGuidedSimCLR(SimCLR):
    name = "clip-guided-simclr"
    display_name = "CLIP-guided SimCLR"
    # 2: image-only student, public k counting, crop-trained guide, measured guide quality
    # 3: guide quality measures linking (same class, another member) against chance; the gate is relative to it
    version = "3"
    description = "SimCLR whose positives/negatives a frozen CLIP guide reshapes (Zhang, Wang and Wang 2023)."
    requirements = Requirements(needs_augmentations=True, needs_guide=True,
                                modality_kinds=frozenset({"image", "tokens"}))
    defaults = SimCLR.defaults | GUIDE_DEFAULTS | {
        "variant": "add-new-positive", "fraction": None, "guide_gate_sd": GUIDE_GATE_SD}
    domains = SimCLR.domains | GUIDE_DOMAINS | {
        "variant": OneOf(VARIANTS), "fraction": Interval(low=0, high=1, high_open=True, optional=True),
        # Standard deviations above chance the guide's linking share must reach; None: a control, not gated.
        "guide_gate_sd": Interval(low=0, optional=True),
    }

    @classmethod
    def input_modalities(cls, task) -> InputModalities:
        return InputModalities(image_modalities(task), image_modalities(task))  # never all: captions stay out

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.variant = str(self.hparams["variant"])
        if self.variant not in VARIANTS:
            raise HarnessError(f"--set variant={self.variant}: choose one of {', '.join(VARIANTS)}")
        fraction = self.hparams.get("fraction")
        self.fraction = float(fraction) if fraction is not None else DEFAULT_FRACTION.get(self.variant, 0.0)
        self.image = image_modality(task)
        self.guide = None
        self.guide_quality: GuideQuality | None = None

    def prepare(self, train) -> None:
        device = next(self.parameters()).device
        recipe = guide_recipe(self.hparams, self.task)
        self.guide = build_guide(str(self.hparams["guide"]), self.task, train, recipe, device)
        if self.variant == "drop-false-positive" and not self.guide.per_view:
            raise HarnessError("drop-false-positive ranks augmentation pairs, which a table of precomputed "
                               "embeddings cannot tell apart; give a guide encoder (clip or module:...)")
        self.guide_quality = measure_guide(self.guide, self.task, train, self.image, int(recipe["batch_size"]),
                                           torch.initial_seed() + GUIDE_SEED_OFFSET, device)

    def check_assumptions(self, history):
        if self.guide_quality is None:
            return []
        sd = self.hparams.get("guide_gate_sd", GUIDE_GATE_SD)
        return [self.guide_quality.check(None if sd is None else float(sd))]

    def record_notes(self) -> dict[str, str]:
        return dict(getattr(self.guide, "facts", {}))  # what the guide was built from, and which members it saw

    def train(self, mode: bool = True):
        super().train(mode)
        if self.guide is not None:
            self.guide.eval()  # frozen: its batch-norm statistics must not drift with SimCLR's batches
        return self

    def loss(self, batch):
        if self.guide is None:
            raise RuntimeError("prepare() builds the guide; the harness calls it before training")
        v1, v2 = batch.two_views()
        z1 = self.projector(self.encoders.joint(v1))
        z2 = self.projector(self.encoders.joint(v2))
        with torch.no_grad():
            g1, g2 = self.guide(v1[self.image], batch.index), self.guide(v2[self.image], batch.index)
        # The guide's neighbours and rankings, like SimCLR's negatives, range over the global batch.
        return guided_nt_xent(gather(z1), gather(z2), gather(g1), gather(g2), gather(batch.labels), self.variant,
                              self.fraction, float(self.hparams["temperature"]))


class AddNewPositive(ClipGuidedSimCLR):
    name = "cgs-add-new-positive"
    display_name = "AddNewPositive"
    defaults = ClipGuidedSimCLR.defaults | {"variant": "add-new-positive"}


class OracleAddNewPositive(ClipGuidedSimCLR):
    """add-new-positive with the labels as the guide: a reference for a guide that links every class member.

    Not an upper bound: a guide's other neighbours can help more than a random same-class one (a row above
    it is flagged on the leaderboard, not hidden)."""

    name = "cgs-oracle-add-new-positive"
    display_name = "AddNewPositive, label-oracle reference"
    description = "add-new-positive whose new positive is a random same-class sample: a reference, not a bound."
    requirements = Requirements(needs_augmentations=True, needs_labels=True,
                                modality_kinds=frozenset({"image", "tokens"}))
    defaults = ClipGuidedSimCLR.defaults | {"variant": "add-new-positive", "guide": "oracle"}


class GroupOracleAddNewPositive(ClipGuidedSimCLR):
    """Control: the new positive is a random sample of the same member (shape), never another member.

    It adds visual near-duplicates and links nothing, so it is not gated on linking: its guide fails by design."""

    name = "cgs-group-oracle-add-new-positive"
    display_name = "AddNewPositive, group-oracle control"
    description = "add-new-positive whose new positive is a random sample of the same member group: no linking."
    requirements = Requirements(needs_augmentations=True, needs_groups=True,
                                modality_kinds=frozenset({"image", "tokens"}))
    defaults = ClipGuidedSimCLR.defaults | {"variant": "add-new-positive", "guide": "group-oracle",
                                            "guide_gate_sd": None}


class ImageGuideAddNewPositive(ClipGuidedSimCLR):
    """Control: the guide is an image-only SimCLR encoder trained with the CLIP guide's recipe (no text)."""

    name = "cgs-image-guide-add-new-positive"
    display_name = "AddNewPositive, image-guide control"
    description = "add-new-positive guided by an image-only SimCLR encoder (the CLIP guide's recipe, no captions)."
    # A control, like the group oracle: its guide's linking is recorded but no assumption rests on it (seed 0
    # on shapes-superclasses it links below chance: its neighbours are mostly the same shape).
    defaults = ClipGuidedSimCLR.defaults | {"variant": "add-new-positive", "guide": "simclr", "guide_gate_sd": None}


class RandomGuideAddNewPositive(ClipGuidedSimCLR):
    """Control: the guide is the task's default image encoder at random initialization, never trained."""

    name = "cgs-random-guide-add-new-positive"
    display_name = "AddNewPositive, random-guide control"
    description = "add-new-positive guided by an untrained image encoder: what any fixed encoder's neighbours add."
    defaults = ClipGuidedSimCLR.defaults | {"variant": "add-new-positive", "guide": "random", "guide_gate_sd": None}


class DropFalseNegative(ClipGuidedSimCLR):
    name = "cgs-drop-false-negative"
    display_name = "DropFalseNegative"
    defaults = ClipGuidedSimCLR.defaults | {"variant": "drop-false-negative"}


class DropEasyNegative(ClipGuidedSimCLR):
    name = "cgs-drop-easy-negative"
    display_name = "DropEasyNegative"
    defaults = ClipGuidedSimCLR.defaults | {"variant": "drop-easy-negative"}


class DropFalsePositive(ClipGuidedSimCLR):
    name = "cgs-drop-false-positive"
    display_name = "DropFalsePositive"
    defaults = ClipGuidedSimCLR.defaults | {"variant": "drop-false-positive"}
