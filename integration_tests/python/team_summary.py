"""Tool team_summary (models/exposures.yml): a Python endpoint using dbt-mxcp's runtime API."""

from dbt_mxcp import runtime


def team_summary(team: str) -> dict:
    runtime.progress(0, 1, "reading people")
    rows = runtime.db.execute(
        "select count(*) as headcount, min(salary) as lowest, max(salary) as highest "
        "from people_enriched where team = $team",
        {"team": team},
    )
    runtime.progress(1, 1, "done")
    asked_by = runtime.user["id"] or runtime.user["role"]
    return {"team": team, **rows[0], "asked_by": asked_by}
