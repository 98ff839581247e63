"""``python -m layerbench.runtime.launch --gpus-per-arm N -- stage train ...``:
``python -m layerbench stage train ...`` as N data-parallel processes.

It is accelerate launch with layerbench's FSDP2 file (``fsdp2.yaml`` next
to this module, after TRL's documented GRPOTrainer setup), found here so
that a job sees it wherever the study's folder is. Accelerate applies FSDP
to GPU processes only: on CPU the same command runs DDP over gloo. Port 0:
accelerate picks a free port, so concurrent jobs on one machine do not
collide.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FSDP_CONFIG = Path(__file__).with_name("fsdp2.yaml")


def main(argv: list[str] | None = None) -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser

    parser = argparse.ArgumentParser(prog="python -m layerbench.runtime.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus-per-arm", type=int, required=True,
                        help="resources.gpus_per_arm: data-parallel processes, one per GPU")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- arguments of python -m layerbench")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    launch_command(launch_command_parser().parse_args(
        ["--config_file", str(FSDP_CONFIG), "--num_processes", str(args.gpus_per_arm), "--main_process_port", "0",
         "-m", "layerbench", *command]))


if __name__ == "__main__":
    main(sys.argv[1:])
