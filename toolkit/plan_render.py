"""The plan as ``plan`` and ``--dry-run`` print it: its filesystems, then every step
with its reads, note, reactions and undo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .plan_records import SOURCE, Plan, Step


def render_steps(plan: Plan, numbered: Iterable[tuple[int, Step]]) -> list[str]:
    """Steps as ``plan`` prints them, each with its number in the plan: the command, what
    it reads, its note and its undo."""
    lines = []
    for n, step in numbered:
        host = plan.source_host if step.role == SOURCE else plan.peer_host
        shown = _show(step.argv) if step.argv else "(in this process)"
        lines.append(f"{n:>3}. [{host}] {step.action:<8} {shown}")
        for probe in step.probes:
            lines.append(f"     {'':<{len(host) + 2}}   read: {_show(probe)}")
        if step.note:
            lines.append(f"     {'':<{len(host) + 2}} # {step.note}")
        for r in step.reactions:
            where = plan.source_host if r.role == SOURCE else plan.peer_host
            lines.append(f"     {'':<{len(host) + 2}}   if {r.when}: [{where}] {_show(r.argv)}")
        if step.undo:
            lines.append(f"     {'':<{len(host) + 2}}   undo: {_show(step.undo)}")
    return lines


def render_plan(plan: Plan) -> str:
    """A readable two-host plan: what will be done, in order, with its undo."""
    lines = [
        f"Plan for domain {plan.domain} (run {plan.run_id})",
        f"  source: {plan.source_host}   peer: {plan.peer_host} ({plan.peer_address}:"
        f"{plan.peer_port})",
        "",
        "Filesystems:",
    ]
    for f in plan.filesystems:
        lines.append(f"  {f.name:<8} {f.fstype:<6} UUID={f.uuid or '-'} label={f.label or '-'}  "
                     f"guest {f.guest_path or '(from guest fstab)'}")
        lines.append(f"           {f.source_device} -> {f.standby_device}")
    if plan.skipped:
        lines.append("Skipped:")
        lines += [f"  {s}" for s in plan.skipped]
    lines.append("")
    lines += render_steps(plan, enumerate(plan.steps, 1))
    if plan.after:
        lines += ["", "After a clean run (the copy done, the marker clean, teardown complete, "
                      "the standby unmounted):"]
        lines += render_steps(plan, enumerate(plan.after, len(plan.steps) + 1))
    lines.append("")
    lines.append("Each step with an undo is written to its host's journal first, in the same "
                 "command; teardown runs every undo above in reverse order, on success, error "
                 "or signal, then removes the journal.")
    return "\n".join(lines)


def _show(argv: Sequence[str]) -> str:
    from shlex import join

    return join(argv)
