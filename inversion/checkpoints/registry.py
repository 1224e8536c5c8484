"""The registry table: every weight file the app downloads (``REGISTRY``) or ships (``BUNDLED``), with licences.

Each :class:`CheckpointSpec` names a Hub file (repo, file name, revision, sha256, size), its licence and which
features need it. Revisions: all entries use ``"main"`` because no commit of these repos is known here; the
*content* is pinned by sha256 instead (a changed upstream file is refused). Where the sha256 is unknown (``None``)
the Hub's LFS sha256 (the ETag of an LFS file) is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

OVERRIDE_ENV = "STYLEGAN_EDIT_WEIGHTS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
FEATURES = frozenset({"generator", "optimization", "pti", "psp", "e4e", "hyperstyle", "identity", "lpips", "align",
                      "editing"})

_NVIDIA_NC = "NVIDIA Source Code License-NC (non-commercial use only)"


class CheckpointError(RuntimeError):
    """A weight file is wrong: bad hash, bad layout, or unsafe content."""


class CheckpointMissingError(CheckpointError):
    """A weight file is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class Source:
    """One place on the Hub that holds a file."""

    repo_id: str
    filename: str
    repo_type: str = "model"
    revision: str = "main"

    @property
    def page_url(self) -> str:
        """Human-facing page of the file on huggingface.co."""
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[self.repo_type]
        return f"https://huggingface.co/{prefix}{self.repo_id}/blob/{self.revision}/{self.filename}"


@dataclass(frozen=True)
class CheckpointSpec:
    """A downloadable file. ``mirrors`` must hold byte-identical copies (same sha256)."""

    name: str
    repo_id: str
    filename: str
    sha256: Optional[str]
    size: Optional[int]
    license: str
    features: frozenset[str]
    description: str
    repo_type: str = "model"
    revision: str = "main"
    mirrors: tuple[Source, ...] = ()
    local_name: Optional[str] = None  # name in $STYLEGAN_EDIT_WEIGHTS_DIR; default: basename of ``filename``
    aliases: tuple[str, ...] = ()  # other names accepted in that folder
    package_file: Optional[tuple[str, str]] = None  # (installed package, path inside it) of a shipped copy

    @property
    def sources(self) -> tuple[Source, ...]:
        """The primary location followed by the mirrors, in the order they are tried."""
        return (Source(self.repo_id, self.filename, self.repo_type, self.revision), *self.mirrors)

    @property
    def override_name(self) -> str:
        """File name looked for in ``$STYLEGAN_EDIT_WEIGHTS_DIR``."""
        return self.local_name or self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BundledFile:
    """Small files shipped inside the repository (paths relative to the project root)."""

    name: str
    paths: tuple[str, ...]
    license: str
    license_file: str
    source: str
    features: frozenset[str]
    description: str

    def files(self) -> list[Path]:
        """Absolute paths of the files."""
        return [PROJECT_ROOT / p for p in self.paths]


_E4E_MIT = "MIT (e4e release, omertov)"

REGISTRY: dict[str, CheckpointSpec] = {
    s.name: s
    for s in (
        CheckpointSpec(
            name="stylegan2_ffhq",
            repo_id="aaronb/StyleGAN2",
            filename="stylegan2-ffhq-config-f.pt",
            sha256="646c7e7c5e3fc4cf8e83dcfe5dce505cc74b61d8982c09563932aa15c4baf18c",
            size=132_717_355,
            license=f"{_NVIDIA_NC}; NVIDIA's FFHQ StyleGAN2 (config-f) converted to rosinality format",
            features=frozenset({"generator", "optimization", "pti"}),
            description="StyleGAN2 FFHQ 1024 generator, container {'g_ema': state_dict, 'latent_avg': (512,)}",
            mirrors=(
                Source("akhaliq/jojogan-stylegan2-ffhq-config-f", "stylegan2-ffhq-config-f.pt"),
                Source("AIRI-Institute/HairFastGAN", "pretrained_models/StyleGAN/ffhq.pt"),
            ),
        ),
        CheckpointSpec(
            name="e4e_ffhq",
            repo_id="public-data/e4e",
            filename="e4e_ffhq_encode.pt",
            sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999",
            size=1_201_649_680,
            license=f"{_E4E_MIT}; contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"e4e"}),
            description="e4e FFHQ encoder + 1024 decoder: {'state_dict', 'latent_avg' (18,512), 'opts' dict}",
            mirrors=(Source("zhengchong/e4e", "e4e_ffhq_encode.pt"), Source("wmpscc/StyleGene", "e4e_ffhq_encode.pt")),
        ),
        CheckpointSpec(
            name="psp_ffhq",
            repo_id="trysem/pixel2style2pixel",
            filename="psp_ffhq_encode.pt",
            sha256="f786ac5cf18fcdbc5c57c9f3f12cbedca69381fbdf5694dd132294e3133749d7",
            size=None,
            license=f"MIT (pSp release, eladrich); contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"psp"}),
            description="pSp FFHQ encoder + 1024 decoder: {'state_dict', 'latent_avg' (18,512), 'opts' dict}",
            mirrors=(Source("AIRI-Institute/HairFastGAN", "pretrained_models/FeatureStyleEncoder/psp_ffhq_encode.pt"),),
        ),
        CheckpointSpec(
            name="hyperstyle_ffhq",
            repo_id="trysem/DualStyleGANplus",
            filename="models/hyperstyle/hyperstyle_ffhq.pt",
            sha256="9d4c627724e9f6b7f87f13a03b71731a4bb537875271cb46662be08a9885c364",
            size=1_440_969_951,
            license=f"MIT (HyperStyle release, yuval-alaluf); contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"hyperstyle"}),
            description="HyperStyle FFHQ hypernetwork + 1024 decoder: {'state_dict' (hypernet.*, decoder.*), "
                        "'latent_avg', 'opts' dict}",
            mirrors=(Source("ethanNeuralImage/inversion_testing", "pretrained_models/hyperstyle/hyperstyle_ffhq.pt",
                            repo_type="space"),),
        ),
        CheckpointSpec(
            name="hyperstyle_w_encoder",
            repo_id="trysem/DualStyleGANplus",
            filename="models/hyperstyle/faces_w_encoder.pt",
            sha256="3cb757ae38268b08db8235b4a3d42c98c74428a817b619338848f277cd23e715",
            size=257_850_531,
            license=f"MIT (HyperStyle release, yuval-alaluf); contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"hyperstyle"}),
            description="HyperStyle's W-space e4e (WEncoder(50, 'ir_se')) + 1024 decoder: {'state_dict' "
                        "(encoder.*, decoder.*), 'opts'}",
            mirrors=(Source("ethanNeuralImage/inversion_testing", "pretrained_models/hyperstyle/faces_w_encoder.pt",
                            repo_type="space"),),
        ),
        CheckpointSpec(
            name="dlib_landmarks",
            repo_id="public-data/dlib_face_landmark_model",
            filename="shape_predictor_68_face_landmarks.dat",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            size=99_693_937,
            license="dlib-models: trained on iBUG 300-W, whose terms exclude commercial use",
            features=frozenset({"align"}),
            description="dlib 68-point face landmark predictor (FFHQ alignment)",
            package_file=("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"),
        ),
        CheckpointSpec(
            name="irse50",
            repo_id="lithiumice/ArcFace_PyTorch",
            filename="InsightFace_Pytorch+model_ir_se50.pth",
            sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
            size=175_367_323,
            license="MIT (TreB1eN/InsightFace_Pytorch); trained on MS-Celeb-1M data (research use)",
            features=frozenset({"identity"}),
            description="IR-SE50 ArcFace backbone, bare state_dict (layout of model_ir_se50.pth)",
            aliases=("model_ir_se50.pth",),
        ),
        CheckpointSpec(
            name="vgg16",
            repo_id="timm/vgg16.tv_in1k",
            filename="model.safetensors",
            sha256=None,  # not known here: verified against the Hub's LFS sha256
            size=None,
            license="BSD-3-Clause (torchvision weights, via timm); trained on ImageNet-1k",
            features=frozenset({"lpips"}),
            description="VGG16 ImageNet weights (torchvision names); only features.* are loaded (LPIPS trunk)",
            local_name="vgg16.tv_in1k.safetensors",
        ),
    )
}

BUNDLED: dict[str, BundledFile] = {
    b.name: b
    for b in (
        BundledFile(
            name="lpips_heads",
            paths=("inversion/data/lpips_v0.1_vgg.safetensors", "inversion/data/lpips_v0.1_alex.safetensors"),
            license="BSD-2-Clause (Zhang et al., LPIPS)",
            license_file="inversion/data/LICENSE-lpips.txt",
            source="PyPI lpips 0.1.4 wheel, weights/v0.1/{vgg,alex}.pth",
            features=frozenset({"lpips"}),
            description="LPIPS v0.1 linear heads",
        ),
        BundledFile(
            name="interfacegan_directions",
            paths=("editing/data/age.safetensors", "editing/data/smile.safetensors", "editing/data/pose.safetensors"),
            license=_E4E_MIT,
            license_file="editing/data/LICENSE-e4e-directions",
            source="encoder4editing release, editings/interfacegan_directions",
            features=frozenset({"editing"}),
            description="InterFaceGAN directions (age, smile, pose) in W",
        ),
        BundledFile(
            name="ganspace_ffhq_pca",
            paths=("editing/data/ffhq_pca.safetensors",),
            license=_E4E_MIT,
            license_file="editing/data/LICENSE-e4e-directions",
            source="encoder4editing release, editings/ganspace_pca/ffhq_pca.pt",
            features=frozenset({"editing"}),
            description="GANSpace PCA of FFHQ W (mean, 80 components, std)",
        ),
        BundledFile(
            name="builtin_models",
            paths=("inversion/data/builtin_g128.safetensors", "inversion/data/builtin_g128.json",
                   "inversion/data/builtin_psp128.safetensors", "inversion/data/builtin_psp128.json",
                   "inversion/data/builtin_e4e128.safetensors", "inversion/data/builtin_e4e128.json",
                   "inversion/data/builtin_hyperstyle128.safetensors", "inversion/data/builtin_hyperstyle128.json"),
            license="MIT (this project; trained on procedural faces)",
            license_file="inversion/data/LICENSE-builtin.txt",
            source="training/train_gan.py, training/train_encoders.py, training/train_hyperstyle.py "
                   "(see training/README.md)",
            features=frozenset({"generator", "psp", "e4e", "hyperstyle"}),
            description="Built-in offline model set: 128 px StyleGAN2, pSp and e4e encoders, HyperStyle",
        ),
        BundledFile(
            name="attribute_regressor",
            paths=("inversion/data/attributes_128.safetensors", "inversion/data/attributes_128.json"),
            license="MIT (this project; trained on procedural faces)",
            license_file="inversion/data/LICENSE-builtin.txt",
            source="training/train_attributes.py",
            features=frozenset({"editing"}),
            description="Attribute regressor for the built-in faces (edit faithfulness, feature distance)",
        ),
    )
}


def get_spec(name: Union[str, CheckpointSpec]) -> CheckpointSpec:
    """The registry entry for ``name`` (a spec passes through unchanged)."""
    if isinstance(name, CheckpointSpec):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise CheckpointError(f"unknown weight file '{name}'; known: {', '.join(REGISTRY)}") from None


def names_for(feature: str) -> list[str]:
    """Registry names needed by ``feature`` (e.g. ``"pti"``)."""
    return [s.name for s in REGISTRY.values() if feature in s.features]


def license_table_markdown() -> str:
    """Markdown table of every third-party weight file (downloaded and bundled) and its licence."""
    rows = ["| File | Used for | Where from | License / terms |", "|---|---|---|---|"]
    for s in REGISTRY.values():
        extra = " (also from the installed face_recognition_models package)" if s.package_file else ""
        rows.append(f"| `{s.filename}` | {', '.join(sorted(s.features))} | "
                    f"[{s.repo_id}](https://huggingface.co/{s.repo_id}){extra} | {s.license} |")
    for b in BUNDLED.values():
        files = ", ".join(f"`{Path(p).name}`" for p in b.paths)
        rows.append(f"| {files} (bundled) | {', '.join(sorted(b.features))} | {b.source} | "
                    f"{b.license}, see `{b.license_file}` |")
    return "\n".join(rows) + "\n"
