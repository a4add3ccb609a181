"""`reconcile init [DIR]`, and the CI and pre-commit files shipped next to it: the scaffold
validates and its first pass succeeds; nothing is overwritten without --force; the example
CI files and the pre-commit hook say what the README says they do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from reconciler.inventory import scaffold
from tests.support.cli import reconcile

REPO = Path(__file__).resolve().parents[2]
SCAFFOLD = [
    "inventory/reconciler.yaml",
    "inventory/teams/ops.yaml",
    "inventory/machines/local.yaml",
    "inventory/tasks/ops/hello.yaml",
    "inventory/.gitattributes",
    ".github/workflows/reconcile.yml",
    ".gitignore",
    "schemas/settings.schema.json",
    "schemas/team.schema.json",
    "schemas/machine.schema.json",
    "schemas/task.schema.json",
]


def test_init_output_validates_and_its_first_pass_succeeds(tmp_path):
    target = tmp_path / "new" / "project"  # created, parents too
    result = reconcile("init", str(target), cwd=tmp_path, check_code=0)
    assert "reconcile validate && reconcile --once" in result.out
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(
        SCAFFOLD
    )
    checked = reconcile("validate", cwd=target, check_code=0)
    # Its one warning: the local machine has no `user:`, so tasks run with our own rights.
    assert checked.err.count("warning:") == 1, checked.err
    assert "machine 'local' runs its tasks with the reconciler's own rights" in checked.err
    first = reconcile("--once", "--format", "json", cwd=target, check_code=0).json()
    assert [(r["task"], r["machine"], r["status"]) for r in first["runs"]] == [
        ("ops/hello", "local", "succeeded")
    ]
    assert reconcile("--once", "--format", "json", cwd=target, check_code=0).json()["runs"] == []
    assert (target / ".reconciler" / "state.db").is_file()


def test_init_in_the_current_folder_with_other_names(tmp_path):
    reconcile("init", "--team", "web", "--machine", "here", cwd=tmp_path, check_code=0)
    task = (tmp_path / "inventory" / "tasks" / "web" / "hello.yaml").read_text()
    assert "machines: [here]" in task
    assert "team: web" in (tmp_path / "inventory" / "machines" / "here.yaml").read_text()
    reconcile("--once", cwd=tmp_path, check_code=0)


def test_init_refuses_to_overwrite_and_names_every_file_unless_forced(tmp_path):
    reconcile("init", cwd=tmp_path, check_code=0)
    team = tmp_path / "inventory" / "teams" / "ops.yaml"
    team.write_text("name: ops\ndescription: mine\n")
    again = reconcile("init", cwd=tmp_path, check_code=2)
    assert "inventory/teams/ops.yaml: already exists" in again.err
    assert len(again.err.strip().splitlines()) == len(SCAFFOLD) - 1  # .gitignore is merged
    assert "--force" in again.err and "Traceback" not in again.err
    assert team.read_text() == "name: ops\ndescription: mine\n"
    forced = reconcile("init", "--force", "--format", "json", cwd=tmp_path, check_code=0).json()
    assert {f["action"] for f in forced["files"]} == {"overwritten"}
    assert "description: The ops team" in team.read_text()


def test_init_keeps_an_existing_gitignore_and_adds_the_state_folder_once(tmp_path):
    (tmp_path / ".gitignore").write_text("*.pyc")
    reconcile("init", cwd=tmp_path, check_code=0)
    text = (tmp_path / ".gitignore").read_text()
    assert text.startswith("*.pyc\n") and text.count(".reconciler/") == 1
    reconcile("init", "--force", cwd=tmp_path, check_code=0)
    assert (tmp_path / ".gitignore").read_text() == text


def test_init_rejects_a_team_name_the_loader_would_refuse(tmp_path):
    result = reconcile("init", "--team", "Ops Team", cwd=tmp_path, check_code=2)
    assert "--team" in result.err and not (tmp_path / "inventory").exists()


def test_scaffold_gitattributes_matches_the_demo_inventory():
    assert (
        scaffold.scaffold_files()["inventory/.gitattributes"]
        == (REPO / "inventory" / ".gitattributes").read_text()
    )


# --------------------------------------------------------------------------- CI, pre-commit


def test_init_workflow_is_the_github_actions_example():
    example = (REPO / "examples" / "ci" / "github-actions.yml").read_text()
    assert scaffold.scaffold_files()[".github/workflows/reconcile.yml"] == example


def test_github_actions_example_reviews_pull_requests_and_reconciles_main():
    flow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    review, apply = flow["jobs"]["review"], flow["jobs"]["reconcile"]
    review_text = json.dumps(review)
    assert "reconcile validate" in review_text
    assert "reconcile diff" in review_text and "--format markdown" in review_text
    assert review["steps"][0]["with"]["fetch-depth"] == 0
    assert review["permissions"]["pull-requests"] == "write"
    assert apply["concurrency"] == {"group": "reconcile", "cancel-in-progress": False}
    run = next(s for s in apply["steps"] if s.get("run") == "reconcile --once")
    assert run["env"] == {
        "RECONCILE_STATE": "${{ secrets.RECONCILE_STATE }}",
        "RECONCILE_IDENTITY": "${{ secrets.RECONCILE_IDENTITY }}",
    }


def test_gitlab_example_reviews_merge_requests_and_serialises_passes():
    ci = yaml.safe_load((REPO / "examples" / "ci" / "gitlab-ci.yml").read_text())
    assert ci["variables"]["GIT_DEPTH"] == "0"
    review = " ".join(ci["review"]["script"])
    assert "reconcile validate" in review and "--format markdown" in review
    assert "merge_requests/$CI_MERGE_REQUEST_IID/notes" in review
    assert ci["reconcile"]["resource_group"] == "reconcile"
    assert ci["reconcile"]["script"] == ["reconcile --once"]


def test_pre_commit_hook_runs_validate_on_inventory_yaml():
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "reconcile-validate" and hook["entry"] == "reconcile validate"
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    pattern = re.compile(hook["files"])
    assert pattern.search("inventory/tasks/ops/web.yaml")
    assert pattern.search("deploy/inventory/teams/ops.yml")
    assert not pattern.search("README.md") and not pattern.search("inventory/vaults/ops.age")
