"""Meta-format checkpoints load strictly and reproduce Meta's outputs; every bad file gets a clear error;
downloads resume with HTTP Range and record / check sha256 (a local server on 127.0.0.1 stands in for
Meta's)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

import pytest
import torch

from testkit.oracle import build_meta
from sam2_rt.weights.checkpoint import (
    CHECKPOINTS,
    CheckpointError,
    Manifest,
    download,
    load_model,
    sha256_file,
    verify_state_dict,
)
from sam2_rt.modeling.config import get_config
from sam2_rt.modeling.sam2 import SAM2Model

NAME = "sam2.1_hiera_tiny"
IMAGE_SIZE = 256
# Keys only SAM 2.1 has: dropping them from a SAM 2.1 tiny state_dict gives a SAM 2 tiny one.
SAM2_1_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")


class MetaCheckpoint(NamedTuple):
    meta: torch.nn.Module
    path: Path


@pytest.fixture(scope="module")
def meta_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> MetaCheckpoint:
    """Meta's model with seeded random weights, saved the way Meta's files are: {'model': state_dict}."""
    meta = build_meta(NAME, IMAGE_SIZE, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / f"{NAME}.pt"
    torch.save({"model": meta.state_dict()}, path)
    return MetaCheckpoint(meta, path)


def test_meta_format_file_loads_strictly_and_reproduces_meta_outputs(
    meta_checkpoint: MetaCheckpoint, tmp_path: Path
) -> None:
    ours = load_model(NAME, meta_checkpoint.path, image_size=IMAGE_SIZE, manifest_path=tmp_path / "manifest.json")
    meta = meta_checkpoint.meta
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    coords = torch.tensor([[[60.0, 100.0], [200.0, 30.0]]])
    labels = torch.tensor([[1, 0]], dtype=torch.int32)
    with torch.inference_mode():
        backbone = meta.forward_image(image)
        s0, s1, feat = backbone["backbone_fpn"]
        ref = meta._forward_sam_heads(feat, {"point_coords": coords, "point_labels": labels}, None, [s0, s1], False)
        our_s0, our_s1, our_feat, _ = ours.forward_image(image)
        out = ours.decode(our_feat, our_s0, our_s1, coords, labels, None, False)
    for ref_value, value in ((feat, our_feat), (ref[3], out.low_res_masks), (ref[5], out.obj_ptr)):
        assert (ref_value - value).abs().max() <= 1e-4 * max(1.0, ref_value.abs().max().item())


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_model(NAME, tmp_path / "absent.pt", manifest_path=tmp_path / "manifest.json")


def test_truncated_file_is_reported_as_corrupt(meta_checkpoint: MetaCheckpoint, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    with open(meta_checkpoint.path, "rb") as source:
        truncated.write_bytes(source.read(1 << 20))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(NAME, truncated, manifest_path=tmp_path / "manifest.json")


def test_random_bytes_are_reported_as_corrupt(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(NAME, garbage, manifest_path=tmp_path / "manifest.json")


class Executable:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.pt"
    torch.save({"model": Executable()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(NAME, path, manifest_path=tmp_path / "manifest.json")


@pytest.mark.parametrize(
    "content", [{"state_dict": {"w": torch.zeros(1)}}, [torch.zeros(1)], {"model": {"w": 3}}], ids=str
)
def test_file_of_another_structure_is_not_a_sam2_checkpoint(tmp_path: Path, content: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="is not a SAM 2 checkpoint"):
        load_model(NAME, path, manifest_path=tmp_path / "manifest.json")


def test_sam2_file_loaded_as_sam2_1_names_missing_keys_and_its_model(
    meta_checkpoint: MetaCheckpoint, tmp_path: Path
) -> None:
    state = {key: value for key, value in meta_checkpoint.meta.state_dict().items() if key not in SAM2_1_ONLY_KEYS}
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as error:
        load_model(NAME, path, manifest_path=tmp_path / "manifest.json")
    message = str(error.value)
    assert "3 missing keys" in message
    assert all(key in message for key in SAM2_1_ONLY_KEYS)
    assert "is a sam2_hiera_tiny checkpoint" in message
    # ... and it is one: it loads under that name.
    load_model("sam2_hiera_tiny", path, image_size=IMAGE_SIZE, manifest_path=tmp_path / "manifest.json")


def test_state_dict_of_another_size_names_unexpected_and_misshaped_keys() -> None:
    with torch.device("meta"):
        small = SAM2Model(get_config("sam2.1_hiera_small")).state_dict()
    with pytest.raises(CheckpointError) as error:
        verify_state_dict(small, NAME)
    message = str(error.value)
    assert "unexpected keys" in message and "image_encoder.trunk.blocks.12.attn.qkv.weight" in message
    assert "is a sam2.1_hiera_small checkpoint" in message


def test_state_dict_of_a_large_model_lists_shape_mismatches() -> None:
    with torch.device("meta"):
        large = SAM2Model(get_config("sam2.1_hiera_large")).state_dict()
    with pytest.raises(CheckpointError) as error:
        verify_state_dict(large, NAME)
    assert re.search(r"\d+ shape mismatches:\n    \S+: file \[[\d, ]+\] vs model \[[\d, ]+\]", str(error.value))


def test_sha256_mismatch_with_manifest_is_refused(meta_checkpoint: MetaCheckpoint, tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.record(NAME, "0" * 64, size=1, url="https://example.invalid/x.pt")
    with pytest.raises(CheckpointError, match="sha256 of .* is [0-9a-f]{64}, but 0{64} was recorded"):
        load_model(NAME, meta_checkpoint.path, manifest_path=manifest.path)
    # A deliberately different file (e.g. fine-tuned) loads when the check is turned off.
    load_model(NAME, meta_checkpoint.path, image_size=IMAGE_SIZE, manifest_path=manifest.path, verify_sha256=False)


# --- download ---------------------------------------------------------------------------------------


class BlobServer(ThreadingHTTPServer):
    """Serves one byte string at any path, honouring "Range: bytes=N-" (206) like Meta's CDN."""

    def __init__(self, blob: bytes) -> None:
        super().__init__(("127.0.0.1", 0), BlobHandler)
        self.blob = blob
        self.range_headers: List[Optional[str]] = []
        # Close the next response after this many bytes of the file (an interrupted transfer).
        self.cut_at: Optional[int] = None
        # False: ignore Range headers and always send the whole file (200), like some mirrors.
        self.honour_range = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{NAME}.pt"


class BlobHandler(BaseHTTPRequestHandler):
    server: BlobServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        blob = self.server.blob
        self.server.range_headers.append(self.headers.get("Range"))
        requested = self.headers.get("Range") if self.server.honour_range else None
        start = int(requested.split("=")[1].split("-")[0]) if requested else 0
        if start >= len(blob) > 0 and requested:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(blob)}")
            self.end_headers()
            return
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.send_header("Content-Length", str(len(blob) - start))
        self.end_headers()
        end = len(blob) if self.server.cut_at is None else self.server.cut_at
        self.server.cut_at = None
        self.wfile.write(blob[start:end])

    def log_message(self, *args: object) -> None:
        """Quiet: no request lines on stderr."""


@pytest.fixture
def server(meta_checkpoint: MetaCheckpoint) -> Iterator[BlobServer]:
    blob_server = BlobServer(meta_checkpoint.path.read_bytes())
    thread = threading.Thread(target=blob_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield blob_server
    finally:
        blob_server.shutdown()
        blob_server.server_close()
        thread.join(timeout=10)


def test_interrupted_download_resumes_with_range_and_records_sha256(
    server: BlobServer, meta_checkpoint: MetaCheckpoint, tmp_path: Path
) -> None:
    manifest = Manifest(tmp_path / "manifest.json")
    dest = tmp_path / "weights" / f"{NAME}.pt"
    half = len(server.blob) // 2
    server.cut_at = half
    with pytest.raises(CheckpointError, match="call download again to resume"):
        download(NAME, dest, url=server.url, manifest_path=manifest.path)
    assert not dest.exists()
    assert (dest.parent / f"{NAME}.pt.part").stat().st_size == half

    progress: List[Tuple[int, Optional[int]]] = []
    result = download(NAME, dest, url=server.url, manifest_path=manifest.path,
                      progress=lambda done, total: progress.append((done, total)))

    assert result == dest and not (dest.parent / f"{NAME}.pt.part").exists()
    assert server.range_headers == [None, f"bytes={half}-"]
    assert progress[0][0] > half and progress[-1] == (len(server.blob), len(server.blob))
    digest = sha256_file(meta_checkpoint.path)
    assert sha256_file(dest) == digest
    assert manifest.recorded_sha256(NAME) == digest
    load_model(NAME, dest, image_size=IMAGE_SIZE, manifest_path=manifest.path)


def test_download_restarts_when_the_server_ignores_range(server: BlobServer, tmp_path: Path) -> None:
    server.honour_range = False
    dest = tmp_path / f"{NAME}.pt"
    (tmp_path / f"{NAME}.pt.part").write_bytes(server.blob[:1000])
    download(NAME, dest, url=server.url, manifest_path=tmp_path / "manifest.json")
    assert server.range_headers == ["bytes=1000-"]
    assert dest.read_bytes() == server.blob


def test_existing_download_is_verified_not_fetched(server: BlobServer, tmp_path: Path) -> None:
    manifest_path = tmp_path / "manifest.json"
    dest = download(NAME, tmp_path, url=server.url, manifest_path=manifest_path)
    assert dest == tmp_path / CHECKPOINTS[NAME].filename
    assert download(NAME, tmp_path, url=server.url, manifest_path=manifest_path) == dest
    assert len(server.range_headers) == 1


def test_download_differing_from_first_download_is_refused(server: BlobServer, tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.record(NAME, "f" * 64, size=len(server.blob), url=server.url)
    dest = tmp_path / f"{NAME}.pt"
    with pytest.raises(CheckpointError, match="was not accepted"):
        download(NAME, dest, url=server.url, manifest_path=manifest.path)
    assert not dest.exists()


def test_download_of_a_file_for_another_model_is_refused(server: BlobServer, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not fit sam2_hiera_tiny"):
        download("sam2_hiera_tiny", tmp_path / "x.pt", url=server.url, manifest_path=tmp_path / "manifest.json")
    assert not (tmp_path / "x.pt").exists()


def test_official_table_covers_the_eight_sam2_models_and_edgetam() -> None:
    assert CHECKPOINTS["sam2_hiera_base_plus"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt"
    )
    assert CHECKPOINTS["sam2.1_hiera_large"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt"
    )
    assert CHECKPOINTS["edgetam"].url == "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"
    assert CHECKPOINTS["edgetam"].filename == "edgetam.pt"
    assert len(CHECKPOINTS) == 9
    assert all(info.config().name == name for name, info in CHECKPOINTS.items())
