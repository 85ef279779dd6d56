"""The training schemes of Valindria et al. (WACV 2018, Tables 1-3) as data.

A scheme says which blocks of the FCN are modality-specific (one copy per modality) and whether the
batch-norm layers of the shared blocks are modality-specific too. Everything else is shared: the
very same layer objects serve every modality's stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from dltk_mm.errors import ConfigurationError

BLOCK_NAMES: tuple[str, ...] = (
    "stem",
    "enc1",
    "enc2",
    "enc3",
    "enc4",
    "dec3",
    "dec2",
    "dec1",
    "dec0",
    "head",
)
"""The blocks of the 5-scale FCN: stem conv, four residual scales, four upscores, final conv."""


@dataclass(frozen=True)
class Scheme:
    """One training scheme.

    Attributes:
        name: lower-case scheme name.
        specific_blocks: blocks with one copy per modality.
        specific_batch_norm: whether the batch-norm layers of the *shared* blocks are per modality
            (MSBN); batch-norm layers of specific blocks are always per modality.
        learning_rate: the paper's Adam learning rate for the scheme (section 5 of the spec).
        description: one line, with the source.
    """

    name: str
    specific_blocks: frozenset[str]
    specific_batch_norm: bool
    learning_rate: float
    description: str

    @property
    def shared_blocks(self) -> frozenset[str]:
        """Blocks shared by all modalities."""
        return frozenset(BLOCK_NAMES) - self.specific_blocks

    def is_specific(self, block: str, batch_norm: bool = False) -> bool:
        """Whether a layer of ``block`` (a batch-norm layer if ``batch_norm``) is per modality."""
        return block in self.specific_blocks or (batch_norm and self.specific_batch_norm)


def _scheme(name, specific, learning_rate, description, specific_batch_norm=False) -> Scheme:
    return Scheme(name, frozenset(specific), specific_batch_norm, learning_rate, description)


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        _scheme(
            "individual",
            BLOCK_NAMES,
            1e-3,
            "two independent networks, each trained on one modality (paper baseline)",
        ),
        _scheme("joint", (), 1e-3, "one network sees both modalities (paper)"),
        _scheme(
            "v1",
            ("stem", "enc1", "enc2", "enc3", "enc4"),
            1e-4,
            "modality-specific encoders, shared decoder and head (paper, Fig. 2)",
        ),
        _scheme(
            "v2",
            ("stem", "enc1"),
            1e-4,
            "modality-specific input and first-scale units, rest shared (paper, Fig. 2)",
        ),
        _scheme(
            "v3",
            ("dec3", "dec2", "dec1", "dec0"),
            1e-4,
            "shared encoder and head, modality-specific upscores (paper, Fig. 2)",
        ),
        _scheme(
            "v4",
            ("stem", "enc1", "enc2", "enc3", "dec3", "dec2", "dec1", "dec0"),
            1e-4,
            "only the deepest scale enc4 (shared latent) and the head shared (paper, Fig. 2)",
        ),
        _scheme(
            "msbn",
            (),
            1e-4,
            "all convolutions shared, every batch-norm layer per modality (Dou et al., IEEE TMI "
            "2020)",
            specific_batch_norm=True,
        ),
    )
}
"""Scheme name -> :class:`Scheme` (spec section 4; the paper's semantics, not the code's bugs)."""


def get_scheme(name: str | Scheme) -> Scheme:
    """Looks up a scheme by (case-insensitive) name.

    Raises:
        ConfigurationError: for an unknown name.
    """
    if isinstance(name, Scheme):
        return name
    key = str(name).lower()
    if key not in SCHEMES:
        raise ConfigurationError(f"unknown scheme {name!r}: choose one of {list(SCHEMES)}")
    return SCHEMES[key]


def default_learning_rate(scheme: str | Scheme) -> float:
    """Adam learning rate of a scheme: 1e-3 for individual/joint, 1e-4 dual-stream (incl. msbn)."""
    return get_scheme(scheme).learning_rate
