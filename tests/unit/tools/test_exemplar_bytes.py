"""`mnemo profile exemplar_bytes`: the stored bytes it reports are the shards' and each form's, and its round
trips are what they claim (lossless forms exact, lossy ones close)."""
import json
import tarfile

from benchmarks.exemplar_bytes_profile import imagenet_bank, main, measure
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.wds_index import mean_image_bytes


def test_the_forms_cost_what_they_store(digits_shards, capsys):
    got = measure(str(digits_shards), "glyphs", 32, classes=3, images=5, per_class=20)
    forms = got["forms"]
    assert forms["fp16"]["bytes_per_exemplar"] == 2 * 3 * 32 * 32
    assert forms["uint8"]["bytes_per_exemplar"] == 3 * 32 * 32
    assert forms["lowres_2"]["bytes_per_exemplar"] == 3 * 16 * 16 and forms["lowres_4"]["bytes_per_exemplar"] == 3 * 64
    assert forms["uint8"]["mean_abs_error"] == 0.0
    for lossless in ("fp16", "png"):                         # 8-bit levels held in float16: off by < 1/40 of a level
        assert forms[lossless]["mean_abs_error"] < 1e-4
    assert 0 < forms["jpeg_q95"]["mean_abs_error"] < forms["jpeg_q25"]["mean_abs_error"] < 0.1
    # the same bytes hold more of a smaller form: exemplars per class = 20 originals' bytes / the form's
    original = got["original_bytes_per_image"]
    assert abs(forms["uint8"]["exemplars_per_class"] - 20 * original / (3 * 32 * 32)) < 0.2
    net = got["imagenet_1k"]
    assert net["raw"] == {"per_class": 20, "sealed_gb": 6.02, "device_gb": 6.02}     # 20 000 float16 224 px images
    assert net["lowres_2"]["per_class"] == 20 * 110_000 // (3 * 112 * 112)            # 58: stored at 112 px
    # the loaders keep the 8-bit forms packed (uint8 at the stored side): half the bytes of the sealed float16
    assert net["lowres_2"]["device_gb"] == round(58 * 1000 * 3 * 112 * 112 / 1e9, 2) < net["lowres_2"]["sealed_gb"]
    assert net["lowres_2"]["sealed_gb"] < net["raw"]["sealed_gb"]
    assert "jpeg_q75" not in net and "224" in net["jpeg"]          # JPEG's bytes are measured, not assumed
    # JPEG rows from measured bytes: 20 originals of 110 KB hold 110 exemplars of 20 KB, kept decoded (8-bit)
    jpeg = imagenet_bank(20, 110_000, jpeg_bytes={"jpeg_q75": 20_000.0})["jpeg_q75"]
    assert jpeg["per_class"] == 110 and jpeg["device_gb"] == round(110 * 1000 * 3 * 224 ** 2 / 1e9, 2)
    assert jpeg["sealed_gb"] == round(2 * 110 * 1000 * 3 * 224 ** 2 / 1e9, 2)
    assert main(["--shards", str(digits_shards), "--classes", "1", "--images", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 1


def test_original_bytes_are_the_image_parts_of_the_shards(digits_shards):
    manifest = load_manifest(digits_shards)
    sizes = []
    for shard in manifest.shards("train", [0]):                 # read from the tars themselves, not the index
        with tarfile.open(manifest.path(shard)) as tar:
            sizes += [m.size for m in tar.getmembers() if m.name.endswith("." + manifest.encoding)]
    assert mean_image_bytes(manifest, "train", 0) == sum(sizes) / len(sizes)
