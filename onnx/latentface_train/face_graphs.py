"""Face-api's face descriptor and age/gender networks as bundle graphs (the library behind
`convert_faceapi`, and `make_tiny_bundle`'s narrow random-weight versions).

Reads the TF.js weights of @vladmandic/face-api@1.7.15 (`scripts/setup_node.sh` installs
the package into onnx/node_modules), builds the PyTorch modules of faceapi.py, exports
`face_id.onnx` and `face_attributes.onnx` (weights inside each file), checks ONNX Runtime
against PyTorch (batch 1 and 8, 1 and 2 threads), writes NOTICE-faceapi.md and adds to the
bundle's manifest.json: `graphs.face_id`, `graphs.face_attributes`, the NOTICE's hash in
`files`, and a top-level `faces` section (threshold, crop, source, licence, verification).
Everything else in the manifest stays byte-for-byte as it was. `tiny=True` writes narrow
random-weight networks with the same inputs and outputs, for the Rust tests.
The graphs' agreement with face-api itself (node) is tests/test_faceapi.py.
"""
import copy
import json
import os
import time
from pathlib import Path

import torch

from . import bundle, faceapi
from .util import sha256_file

NPM_SPEC = "@vladmandic/face-api@1.7.15"
PACKAGE_VERSION = "1.7.15"
# of the registry tarball vladmandic-face-api-1.7.15.tgz (`npm pack`); the integrity is
# the one in onnx/package-lock.json (sha512 of the same tarball)
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
INTEGRITY = "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw=="
WEIGHTS_SHA256 = {
    "model/face_recognition_model-weights_manifest.json":
        "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
    "model/face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
    "model/age_gender_model-weights_manifest.json": "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
    "model/age_gender_model.bin": "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
}
# dlib's threshold: descriptors of the same person are closer than this (Euclidean)
ID_THRESHOLD = 0.6
# side of the centre square of the aligned crop fed to both graphs, as a fraction of the
# crop's width: measured by eval_face_crop on 500 held-out UTKFace faces at 64 px
# (docs/faces.md): 1.0 had the lowest age MAE and best identity separation, and a gender
# accuracy within 0.4 points of the best (0.9)
CENTRE_FRACTION = 1.0
NOTICE = "NOTICE-faceapi.md"
KEYS = ("face_id", "face_attributes")
ONNX_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = ONNX_DIR / "node_modules" / "@vladmandic" / "face-api"
LICENCE = ("face-api (@vladmandic/face-api, a fork of face-api.js) is MIT-licensed (NOTICE-faceapi.md). "
           "face_id: dlib_face_recognition_resnet_model_v1 weights by Davis King, released into the public "
           "domain by their author (dlib-models README). face_attributes: face-api.js's age/gender model, "
           "shipped under the package's MIT licence; trained on face sets that include UTKFace, IMDB-WIKI and "
           "others with non-commercial terms.")


def graph_specs(face_id, face_attr):
    def images(size):
        def make(b, seed):
            g = torch.Generator().manual_seed(seed)
            return [torch.randint(0, 256, [b, 3, size, size], generator=g).float()]
        return make

    return [
        bundle.GraphSpec("face_id", face_id, images(faceapi.FACE_ID_SIZE), ["image"], ["descriptor"]),
        bundle.GraphSpec("face_attributes", face_attr, images(faceapi.FACE_ATTRIBUTES_SIZE), ["image"],
                         ["age", "gender"]),
    ]


def check_package(package):
    """-> {file: sha256} of the converted files; raises unless they are the pinned release."""
    package = Path(package)
    meta = json.loads((package / "package.json").read_text())
    if meta.get("name") != "@vladmandic/face-api" or meta.get("version") != PACKAGE_VERSION:
        raise SystemExit(f"{package}: expected {NPM_SPEC}, found {meta.get('name')}@{meta.get('version')}")
    lock = package.parent.parent.parent / "package-lock.json"  # <dir>/node_modules/@vladmandic/face-api
    if lock.exists():
        entry = json.loads(lock.read_text()).get("packages", {}).get("node_modules/@vladmandic/face-api", {})
        if entry.get("integrity") != INTEGRITY:
            raise SystemExit(f"{lock}: face-api integrity {entry.get('integrity')} is not the pinned one")
    found = {f: sha256_file(package / f) for f in WEIGHTS_SHA256}
    bad = [f for f in found if found[f] != WEIGHTS_SHA256[f]]
    if bad:
        raise SystemExit(f"{package}: {bad} differ from the pinned {NPM_SPEC} release")
    return found


def notice_text(package, weights):
    licence = (Path(package) / "LICENSE").read_text().strip()
    files = "\n".join(f"| `{f}` | `{h}` |" for f, h in weights.items())
    return f"""# face_id.onnx and face_attributes.onnx: face-api's networks

Both graphs are conversions of the TF.js weights shipped in the npm package
`{NPM_SPEC}` (MIT; <https://github.com/vladmandic/face-api>), a fork of
face-api.js by Vincent Mühler (<https://github.com/justadudewhohacks/face-api.js>, MIT).

- registry tarball `vladmandic-face-api-{PACKAGE_VERSION}.tgz`: sha256 `{TARBALL_SHA256}`
- integrity (onnx/package-lock.json): `{INTEGRITY}`

| converted file (in the package) | sha256 |
|---|---|
{files}

`latentface_train/convert_faceapi.py` decodes them (uint8 affine quantization
`q * scale + min`, or plain float32), re-implements the forward passes of the package's
`faceRecognitionNet` and `ageGenderNet` (TinyXception) in PyTorch and exports them; the
weights are not retrained or changed. `onnx/tests/test_faceapi.py` checks the graphs
against the package's own code (TF.js, wasm backend).

## The weights

- `face_id.onnx` (`face_recognition_model`): the package's TUTORIAL.md says the net is the
  one of dlib's `dnn_face_recognition_ex.cpp` example and that the weights were trained by
  Davis King (99.38% on LFW); that is `dlib_face_recognition_resnet_model_v1`. The package
  itself states no licence for the weights other than its own MIT licence. Davis King's
  dlib-models repository (<https://github.com/davisking/dlib-models>, README) says he
  released his model files into the public domain ("anyone can do whatever they want
  with these model files"); it describes the training set as about 3 million faces from
  FaceScrub, VGG-Face and images scraped from the internet. That statement is not part of
  the npm package and could not be checked against it here.
- `face_attributes.onnx` (`age_gender_model`): face-api.js's own age/gender model,
  distributed under the package's MIT licence. TUTORIAL.md lists its training and test
  sets: UTK, FGNET, Chalearn, Wiki, IMDB, CACD, MegaAge, MegaAge-Asian; several of them
  (UTKFace and IMDB-WIKI among them) are licensed for non-commercial research only, as
  are the bundle's own models.

## Licence of @vladmandic/face-api

```
{licence}
```
"""


def _without_faces(manifest):
    m = copy.deepcopy(manifest)
    for k in KEYS:
        m.get("graphs", {}).pop(k, None)
    m.get("files", {}).pop(NOTICE, None)
    m.pop("faces", None)
    return m


def _dump(manifest):
    return json.dumps(manifest, indent=1) + "\n"


def update_manifest(bundle_dir, entries, faces, notice_sha=None):
    """Add the face graphs, the NOTICE hash and `faces`; keep every other byte."""
    path = Path(bundle_dir) / "manifest.json"
    text = path.read_text()
    old = json.loads(text)
    if _dump(old) != text:
        raise SystemExit(f"{path} is not in the toolchain's JSON style (indent 1): not rewriting it")
    new = copy.deepcopy(old)
    for k in KEYS:
        new["graphs"][k] = entries[k]
    if notice_sha is not None:
        new.setdefault("files", {})[NOTICE] = notice_sha
    else:
        new.get("files", {}).pop(NOTICE, None)
    new["faces"] = faces
    if _dump(_without_faces(new)) != _dump(_without_faces(old)):
        raise AssertionError("manifest update touched more than the face entries")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_dump(new))
    os.replace(tmp, path)
    return new


def convert(*, bundle_dir, package=None, tiny=False, seed=0, verify=True, log=print):
    """Export, verify and register the face graphs in `bundle_dir`; returns the `faces` section.

    tiny=False: face-api's weights from `package` (default onnx/node_modules/@vladmandic/face-api).
    tiny=True: narrow random-weight networks (faceapi.tiny_*; deterministic in `seed`).
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "manifest.json").exists():
        raise SystemExit(f"{bundle_dir}: no manifest.json (write the bundle first)")
    t0 = time.time()
    if tiny:
        face_id, face_attr = faceapi.tiny_face_id(seed), faceapi.tiny_face_attributes(seed)
        weights = None
        source = {"npm": None, "random_weights": {"seed": seed, "face_id_channels": face_id.channels,
                                                  "face_attributes_channels": face_attr.channels}}
        licence = "MIT (project code; random weights, nothing trained)"
    else:
        package = Path(package or DEFAULT_PACKAGE)
        weights = check_package(package)
        face_id = faceapi.load_face_id(package / "model")
        face_attr = faceapi.load_face_attributes(package / "model")
        source = {"npm": NPM_SPEC, "tarball_sha256": TARBALL_SHA256, "integrity": INTEGRITY,
                  "weights_sha256": weights}
        licence = LICENCE
    specs = graph_specs(face_id, face_attr)
    entries = bundle.export_graphs(bundle_dir, specs, log=log)
    report = bundle.verify_graphs(bundle_dir, specs, log=log) if verify else {"ok": None}
    if verify and not report["ok"]:
        raise SystemExit("face graph verification failed: the manifest is not updated")
    notice_sha = None
    if not tiny:
        tmp = bundle_dir / (NOTICE + ".tmp")
        tmp.write_text(notice_text(package, weights))
        os.replace(tmp, bundle_dir / NOTICE)
        notice_sha = sha256_file(bundle_dir / NOTICE)
    faces = {
        "id_threshold": ID_THRESHOLD,
        "crop": {"centre_fraction": CENTRE_FRACTION},
        "source": source,
        "licence": licence,
        "verification": report,
    }
    update_manifest(bundle_dir, entries, faces, notice_sha)
    log(f"face graphs in {bundle_dir}: {time.time() - t0:.0f} s, verification ok={report['ok']}")
    return faces
