"""The training schemes of Valindria et al. (WACV 2018, Tables 1-3) as data.

A scheme says which blocks of the FCN are modality-specific (one copy per modality) and whether the
batch-norm layers of the shared blocks are modality-specific too. Everything else is shared: the
very same layer objects serve every modality's stream.

The paper's schemes are ``individual``, ``joint``, ``v1``-``v4`` (plus ``msbn``, Dou et al. 2020).
The ``*_code`` schemes reproduce what the authors' code (``vanya2v/Multi-modal-learning``,
``dualstream_fcn_v{1,2,4}.py``) actually computed, bugs included (docs/paper.md, section 8); they
are never the default and are selected by name (``--scheme=v4_code``). In that code both modalities'
copies of the specific encoder blocks ran on every batch; the tensor entering the shared part on the
main (deepest) path was always the last-built stream's, i.e. the CT copies' output (``stream1``, fed
with the current batch whatever its modality), while the skip connections of the decoder were
selected by the batch's stream id (``tf.cond``), i.e. came from the fed modality's own copies. Here
this is :attr:`Scheme.feature_source` = ``"ct"``: in the stream of any other modality the specific
encoder blocks before the first shared block run twice, once as the CT copies (main path, so the CT
copies receive gradients from, and update their batch-norm statistics on, that modality's batches)
and once as the stream's own copies (skip connections only). Per variant:

* ``v1_code``: specific stem and enc1-enc4, shared decoder and head. A non-CT stream's shared
  decoder starts from the CT copies' enc4 output; its skips come from its own stem-enc3. Its own
  enc4 copy never feeds anything (dead weights in the code, never receiving a gradient): it is
  not built here.
* ``v2_code``: only the stem specific (the code's V2; the paper says stem and enc1). A non-CT
  stream's shared enc1 consumes the CT stem's output; only the decoder's last skip (dec0) comes
  from its own stem.
* ``v4_code``: specific stem-enc3 and decoder, shared enc4 and head. A non-CT stream's shared enc4
  consumes the CT copies' enc3 output; its own stem-enc3 feed only its own decoder's skips.

Not reproduced: the code ran *both* streams in full on every batch, so the batch-norm statistics
of the copies that a batch's stream does not use (e.g. the MR encoder and decoder copies on a CT
batch) were updated too. With the routed step only the batch's stream runs: the CT encoder copies
do see both modalities (they are on every stream's main path, as in the code), but a non-CT
modality's own copies see only its own batches. Inference is unchanged by that (the moving
statistics are the only difference). ``v2_code``'s only specific block is a convolution without
batch norm, so it has nothing to mix.
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
        learning_rate: the paper's Adam learning rate for the scheme (docs/paper.md, section 4.4).
        description: one line, with the source.
        feature_source: ``None`` (the paper: every stream uses its own copies) or the modality
            whose copies of the leading specific encoder blocks compute, in *every* stream, the
            features entering the first shared block (the authors' code used the CT stream's;
            see the module docstring). The stream's own copies then only feed its skip
            connections. A model using it must have that modality.
    """

    name: str
    specific_blocks: frozenset[str]
    specific_batch_norm: bool
    learning_rate: float
    description: str
    feature_source: str | None = None

    @property
    def shared_blocks(self) -> frozenset[str]:
        """Blocks shared by all modalities."""
        return frozenset(BLOCK_NAMES) - self.specific_blocks

    def is_specific(self, block: str, batch_norm: bool = False) -> bool:
        """Whether a layer of ``block`` (a batch-norm layer if ``batch_norm``) is per modality."""
        return block in self.specific_blocks or (batch_norm and self.specific_batch_norm)

    @property
    def independent_streams(self) -> bool:
        """Whether the streams share no layer at all (``individual``): each modality's network is
        then trained as if alone, with its own optimizer (docs/paper.md, section 4.4)."""
        return self.specific_blocks == frozenset(BLOCK_NAMES) and self.feature_source is None

    def borrowed_blocks(self, modality: str) -> tuple[str, ...]:
        """Blocks whose :attr:`feature_source` copies run in ``modality``'s stream (main path).

        The leading specific encoder blocks (``stem``, ``enc1``, ... up to the first shared
        block); empty for the paper's schemes and for the feature source's own stream.
        """
        if self.feature_source is None or modality == self.feature_source:
            return ()
        leading = []
        for block in BLOCK_NAMES[:5]:  # stem, enc1-enc4
            if block not in self.specific_blocks:
                break
            leading.append(block)
        return tuple(leading)


def _scheme(name, specific, learning_rate, description, specific_batch_norm=False,
            feature_source=None) -> Scheme:
    return Scheme(name, frozenset(specific), specific_batch_norm, learning_rate, description,
                  feature_source)


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
        _scheme(
            "v1_code",
            ("stem", "enc1", "enc2", "enc3", "enc4"),
            1e-4,
            "V1 as the authors' code computed it: the shared decoder always starts from the CT "
            "encoder copies' output (own copies give the skips only; own enc4 unused, not built)",
            feature_source="ct",
        ),
        _scheme(
            "v2_code",
            ("stem",),
            1e-4,
            "V2 as the authors' code computed it: only the stem specific, shared enc1 always fed "
            "by the CT stem (own stem gives the dec0 skip only)",
            feature_source="ct",
        ),
        _scheme(
            "v4_code",
            ("stem", "enc1", "enc2", "enc3", "dec3", "dec2", "dec1", "dec0"),
            1e-4,
            "V4 as the authors' code computed it: shared enc4 always fed by the CT encoder copies "
            "(own stem-enc3 give the own decoder's skips only)",
            feature_source="ct",
        ),
    )
}
"""Scheme name -> :class:`Scheme` (docs/paper.md, section 3.1). The paper's semantics by default;
the ``*_code`` entries reproduce the authors' code (module docstring), selected only by name."""


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
