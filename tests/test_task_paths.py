"""Files and folders named by qa_training and image_optimization tasks stay inside the operator's
allowed roots (worker.jobs.task_paths): inside → used; outside, `..` or a symlink out → the task is
refused on its first attempt, before anything is read or written, and the reason names no path."""

from __future__ import annotations

from pathlib import Path

import pytest

from loaders.settings import LoaderSettings
from worker.jobs.task_paths import confine_task_paths
from worker.lifecycle import TaskRefused


def _settings(*roots: Path) -> LoaderSettings:
    return LoaderSettings(loader_allowed_roots=[str(r) for r in roots], loader_allowed_buckets=[], loader_allowed_tables=[])


def test_paths_inside_the_allowed_roots_are_resolved(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "runs").mkdir(parents=True)
    confined = confine_task_paths("qa_training", {"output_dir": allowed / "runs" / "new", "log_file": None,
                                                  "input_jsonl": str(allowed / "x" / ".." / "pairs.jsonl")},
                                  _settings(allowed))
    assert confined == {"output_dir": allowed / "runs" / "new", "input_jsonl": allowed / "pairs.jsonl"}


@pytest.mark.parametrize("where", ["sibling", "dotdot", "absolute", "symlink"])
def test_paths_outside_are_refused_without_echoing_them(tmp_path, where):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "out").symlink_to("/etc")
    path = {"sibling": tmp_path / "secret-dir", "dotdot": allowed / ".." / "secret-dir",
            "absolute": Path("/etc/hostname"), "symlink": allowed / "out" / "hostname"}[where]
    with pytest.raises(TaskRefused) as refused:
        confine_task_paths("qa_training", {"config.input_jsonl": path}, _settings(allowed))
    reason = str(refused.value)
    assert "config.input_jsonl" in reason and "CLICKTUNE_LOADER_ALLOWED_ROOTS" in reason
    assert "secret-dir" not in reason and "/etc" not in reason


def test_an_empty_allow_list_allows_nothing(tmp_path):
    with pytest.raises(TaskRefused):
        confine_task_paths("image_optimization", {"output_dir": tmp_path}, _settings())


@pytest.mark.slow
def test_tasks_naming_paths_outside_are_refused_on_the_first_attempt(tmp_path, mongo_server, mongo_db, monkeypatch):
    from dao.task_documents import TaskStatus
    from dao.tasks import TasksDAO
    from worker.jobs import image_job, qa_job
    from worker.lifecycle import run_task
    from worker.settings import Settings

    monkeypatch.setenv("CLICKTUNE_LOADER_ALLOWED_ROOTS", str(tmp_path / "allowed"))
    settings = Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name)
    requests = {
        qa_job: qa_job.QATrainingRequest(config={"input_jsonl": "/etc/hostname", "output_dir": str(tmp_path / "allowed" / "out")}),
        image_job: image_job.ImageOptimizationRequest(output_dir=str(tmp_path / "elsewhere"), dataset="digits"),
    }
    for job, request in requests.items():
        dao = TasksDAO.for_kind(mongo_db, job.KIND)
        task_id = dao.create(request, max_attempts=3).task.id
        assert run_task(job.KIND, task_id, job.run, settings=settings, db=mongo_db) == TaskStatus.refused
        task = dao.get(task_id)
        assert task.attempt == 1 and "CLICKTUNE_LOADER_ALLOWED_ROOTS" in task.detail, task.detail
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "allowed" / "out").exists()
