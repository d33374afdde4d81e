"""Command `judge`: live judging of records (see localstore.ops.judge)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from localstore.cli.context import Context, pass_ctx
from localstore.cli.ids import RECORD_ID
from localstore.cli.output import emit_json, json_option, progress_bar
from localstore.errors import Interrupted, UsageError

if TYPE_CHECKING:
    from localstore.ops.judge import JudgeReport


MAX_LISTED = 20  # failures listed in the text summary (--json lists them all)


@click.command()
@click.argument("record_ids", nargs=-1, type=RECORD_ID)
@click.option("--where", help="An SQL condition on the records view, e.g. \"json_extract(properties, '$.label') = 'escalated'\".")
@click.option("--judge-file", required=True, help="A JSON file holding the judge definition (the API's CreateJudgeRequest).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 32))
@click.option("--allow-stale", is_flag=True, help="Also judge records with unpushed local edits (the server judges its own version).")
@json_option
@pass_ctx
def judge(
    ctx: Context, record_ids: tuple[str, ...], where: str | None, judge_file: str,
    concurrency: int, allow_stale: bool, as_json: bool,
) -> int:
    """Run a judge on records (RECORD_ID… or --where) and store every verdict.

    The latest verdicts are in the `judgements` view, every run in `judgement_runs`:
    `localstore sql "select answer, count(*) from judgements group by answer"`.
    Exit 1 if any record failed.

    \b
    Examples:
      localstore judge 0d6f2b1e --judge-file helpfulness.json
      localstore judge --where "json_extract(properties, '$.label') = 'escalated'" --judge-file j.json
    """
    from localstore.ops.judge import JudgeReport as Report
    from localstore.ops.judge import judge_records, select_records
    from localstore.ops.judge_definition import load_judge_definition

    if record_ids and where is not None:
        raise UsageError("give RECORD_IDs or --where, not both")
    definition = load_judge_definition(judge_file)
    ids = select_records(ctx.store, record_ids or None, where=where)
    if not ids:  # e.g. an incremental run with nothing new: done, not an error
        if as_json:
            emit_json(Report(definition["name"], definition["model_name"]).to_dict())
        else:
            click.echo("no record matches --where: nothing to judge")
        return 0
    try:
        with ctx.client() as client, progress_bar(None if not as_json else False) as progress:
            report = judge_records(
                ctx.store, client, definition, ids, concurrency=concurrency, allow_stale=allow_stale, progress=progress
            )
            ctx.work_is_done()
    except Interrupted as exc:  # Ctrl-C: the verdicts that arrived are stored; exit 130
        report = exc.done
        ctx.work_is_done()
    if as_json:
        emit_json(report.to_dict())
    else:
        _summary(report)
    if report.interrupted:
        click.echo(f"localstore: interrupted: the {report.succeeded} verdict(s) that arrived are stored; "
                   f"{len(report.not_judged)} record(s) not judged", err=True)
    return report.exit_code


def _summary(report: JudgeReport) -> None:
    for skip in report.skipped:
        click.echo(f"localstore: warning: skipped {skip['record_id']}: {skip['reason']}", err=True)
    for rid in report.refreshed:
        click.echo(
            f"localstore: warning: {rid} changed on the server since the pull: its server version was "
            "judged, and the store now mirrors it",
            err=True,
        )
    failed = len(report.failed) + len(report.not_judged)
    click.echo(
        f"judge {report.judge_name!r} on {report.selected} record(s): {report.succeeded} succeeded, "
        f"{failed} failed, {len(report.skipped)} skipped"
    )
    if report.answers:
        shown = sorted(report.answers.items(), key=lambda kv: (-kv[1], str(kv[0])))
        click.echo(
            "answers: "
            + ", ".join(f"{a} ×{n}" if isinstance(a, str) else f"{a:g} ×{n}" for a, n in shown[:10])
            + (f", … ({len(shown) - 10} more)" if len(shown) > 10 else "")
        )
    for failure in report.failed[:MAX_LISTED]:
        click.echo(f"failed {failure['record_id']}: {failure['error']}")
    if len(report.failed) > MAX_LISTED:
        click.echo(f"… and {len(report.failed) - MAX_LISTED} more failures (--json lists them all)")
    if report.stopped:
        click.echo(f"stopped early, {len(report.not_judged)} record(s) not judged: {report.stopped}")
    if failed:
        click.echo(
            "verdicts that completed are stored; run the command again to retry the failed records",
            err=True,
        )


COMMANDS = [judge]
