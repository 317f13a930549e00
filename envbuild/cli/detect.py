"""`envbuild detect`: what this machine has, and which profile it should use, in one sentence."""

from __future__ import annotations

from typing import Any

import click

from envbuild.cli.options import TORCH_SOURCES, build_deployment
from envbuild.cli.output import show
from envbuild.torch.gpu.explain import fit_reason_with_line, recommendation_action, recommendation_reason


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Stable machine-readable output for scripts.")
@click.option("--torch-source", type=click.Choice(TORCH_SOURCES),
              help="Recommend among index profiles, or among PyPI-sourced ones (-pypi). Default: [lock] "
                   "torch-source, else the index.")
@click.option("--all", "show_all", is_flag=True, help="Also list every profile with its verdict.")
@click.pass_context
def detect(ctx: click.Context, as_json: bool, torch_source: str | None, show_all: bool) -> None:
    """Detect GPUs, driver and CUDA support, and recommend a profile (with the reason).

    \b
    ENVBUILD_CUDA_DRIVER_VERSION, ENVBUILD_GPU_COMPUTE_CAP and ENVBUILD_AMD_GPU_ARCHITECTURE
    override what is detected ("what would I get on driver 550.54.14?").
    """
    import json

    from envbuild.torch.fitting import candidates, choose

    deployment = build_deployment(ctx, {"torch_source": torch_source})
    choice = choose(candidates(deployment.catalogue, deployment.torch_source), environ=deployment.env)
    machine, rec = choice.machine, choice.recommendation
    if as_json:
        payload = {"machine": machine.to_json(), "recommendation": {
            "profile": rec.profile, "reason": recommendation_reason(rec), "action": recommendation_action(rec),
            "fits": [{"profile": f.profile, "ok": f.ok, "reason": fit_reason_with_line(f)} for f in rec.fits]}}
        show(json.dumps(payload, indent=2, sort_keys=True))
        return
    for line in _describe(machine):
        show(line)
    show("")
    show(f"recommended profile: {rec.profile or 'none'}")
    show(f"  why: {recommendation_reason(rec)}")
    if recommendation_action(rec):
        show(f"  what to do: {recommendation_action(rec)}")
    if show_all:
        show("")
        for fit in rec.fits:
            show(f"  {'fits ' if fit.ok else 'no   '} {fit.profile:<16} {fit_reason_with_line(fit)}")


def _describe(machine: Any) -> list[str]:
    lines = [f"system: {machine.system} {machine.machine}"]
    if machine.gpus:
        for gpu in machine.gpus:
            extra = ", ".join(x for x in (gpu.arch, f"compute {gpu.compute_capability}"
                                          if gpu.compute_capability else None) if x)
            lines.append(f"gpu: {gpu.vendor} {gpu.name}" + (f" ({extra})" if extra else ""))
    else:
        lines.append("gpu: none found")
    if machine.nvidia_driver:
        lines.append(f"nvidia driver: {machine.nvidia_driver} (from {machine.driver_source})")
    if machine.max_cuda:
        lines.append(f"highest CUDA the driver supports: {machine.max_cuda}")
    if machine.rocm_version:
        lines.append(f"ROCm: {machine.rocm_version}")
    lines.extend(f"note: {note}" for note in machine.notes)
    return lines
