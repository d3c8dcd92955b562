"""python -m build_engines {cpu,adapters,gb10,gb10-image,plan,configs,nemo-env} [options]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from build_engines.cpu import BUILDERS, build_cpu

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cpu = sub.add_parser("cpu", help="embedded CPU default from models inside PyPI packages")
    cpu.add_argument("--out", type=Path, default=REPO / "engines" / "cpu")
    cpu.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="build only these engines")
    cpu.add_argument(
        "--llm-gguf",
        type=Path,
        help="serve this local GGUF model (with its own chat template) instead of the packaged SmolLM2-135M",
    )
    cpu.add_argument(
        "--personas",
        type=Path,
        default=REPO / "personas",
        help="train a LoRA adapter for each persona here that names one (packaged SmolLM2 only)",
    )

    from build_engines import adapters, gb10, gb10_image, model_configs, plan

    adapters.add_arguments(sub.add_parser("adapters", help="persona LoRA adapters trained on the CPU -> engines/cpu"))
    gb10.add_arguments(sub.add_parser("gb10", help="DGX Spark: TensorRT-LLM engines + GPU speech -> engines/gb10"))
    gb10_image.add_arguments(
        sub.add_parser("gb10-image", help="DGX Spark container: check the base's arm64 manifest, then docker build")
    )
    plan.add_arguments(sub.add_parser("plan", help="memory and decode-speed plan for a target (refuses misfits)"))
    model_configs.add_arguments(sub.add_parser("configs", help="regenerate every model_repository config file"))
    sub.add_parser("nemo-env", help="create the NeMo build environment (NeMo TTS export; engines/.build-env)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "nemo-env":
        from build_engines import nemo_tts

        return nemo_tts.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "adapters":
        return adapters.run(args)
    if args.command == "gb10":
        return gb10.run(args)
    if args.command == "gb10-image":
        return gb10_image.run(args)
    if args.command == "plan":
        return plan.run(args)
    if args.command == "configs":
        return model_configs.run(args)
    if args.command == "cpu":
        print(f"building CPU engines into {args.out}")
        try:
            build_cpu(args.out, args.only, llm_gguf=args.llm_gguf, personas=args.personas)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
