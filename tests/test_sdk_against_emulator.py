"""The official SDK (mistralai, an independent client of the same API) against the
emulator: every datasets / records call it has that is in the spec."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

pytest.importorskip("mistralai.client")
from mistralai.client import Mistral, errors

from localstore_emulator import EmulatorServer

REGRESSION_JUDGE = {
    "name": "faithfulness",
    "description": "Does the answer stick to the facts?",
    "model_name": "mistral-small-latest",
    "output": {"type": "REGRESSION", "min": 1, "max": 5, "min_description": "no", "max_description": "yes"},
    "instructions": "Rate faithfulness.",
    "tools": [],
}
CLASSIFICATION_JUDGE = {
    **REGRESSION_JUDGE,
    "name": "tone check",
    "output": {
        "type": "CLASSIFICATION",
        "options": [{"value": "polite", "description": ""}, {"value": "rude", "description": ""}],
    },
}


def test_dataset_calls(sdk: Mistral, emulator: EmulatorServer, us_stamps: None) -> None:
    datasets = sdk.beta.observability.datasets
    tag = uuid.uuid4().hex[:10]
    created = datasets.create(name=f"sdk set {tag}", description="via the SDK")
    assert created.name == f"sdk set {tag}" and created.slug == f"sdk-set-{tag}"
    assert isinstance(created.created_at, datetime) and created.created_at.tzinfo is not None
    assert created.deleted_at is None

    fetched = datasets.fetch(dataset_id=created.id)
    assert fetched.id == created.id and fetched.description == "via the SDK"
    assert datasets.fetch(dataset_id=created.slug).id == created.id  # slugs work too

    updated = datasets.update(dataset_id=created.id, name=f"sdk set {tag} v2")
    assert updated.name == f"sdk set {tag} v2" and updated.updated_at > created.updated_at

    listing = datasets.list(q=tag, page=1, page_size=10).datasets
    assert listing.count == 1 and [d.id for d in listing.results] == [created.id]

    datasets.delete(dataset_id=created.id)
    with pytest.raises(errors.ObservabilityError) as caught:
        datasets.fetch(dataset_id=created.id)
    assert caught.value.data.detail.error_code == "DATASET_NOT_FOUND"
    assert caught.value.status_code == 404


def test_record_calls(sdk: Mistral, dataset, emulator: EmulatorServer, us_stamps: None) -> None:
    datasets = sdk.beta.observability.datasets
    records = datasets.records
    dataset_id = dataset(3)

    page = datasets.list_records(dataset_id=dataset_id, page=1, page_size=2).records
    assert page.count == 3 and len(page.results) == 2 and page.next and page.previous is None
    second = datasets.list_records(dataset_id=dataset_id, page=2, page_size=2).records
    listed = [r.id for r in page.results + second.results]
    assert listed == [r["id"] for r in emulator.state.list_records(dataset_id)]

    payload = {"messages": [{"role": "user", "content": "Where is my parcel?"}]}
    made = datasets.create_record(dataset_id=dataset_id, payload=payload, properties={"label": "new"})
    assert made.source == "DIRECT_INPUT" and made.payload == payload
    assert made.properties == {"label": "new"} and made.dataset_id == dataset_id
    spanned = datasets.create_record(dataset_id=dataset_id, payload={}, source="TELEMETRY_SPAN")
    assert spanned.source == "DIRECT_INPUT" and spanned.properties == {}

    fetched = records.fetch(dataset_record_id=made.id)
    assert fetched.id == made.id and fetched.updated_at == made.updated_at

    records.update_payload(dataset_record_id=made.id, payload={"messages": []})
    records.update_properties(dataset_record_id=made.id, properties={"label": "done", "score": 0.5})
    after = records.fetch(dataset_record_id=made.id)
    assert after.payload == {"messages": []} and after.properties == {"label": "done", "score": 0.5}
    assert after.updated_at > made.updated_at

    with pytest.raises(errors.ObservabilityError) as caught:
        records.update_payload(dataset_record_id=made.id, payload={"messages": "oops"})
    assert caught.value.status_code == 422
    assert caught.value.data.detail.error_code == "DATASET_RECORD_FORMAT_ERROR"

    score = records.judge(dataset_record_id=made.id, judge_definition=REGRESSION_JUDGE)
    assert 1 <= score.answer <= 5 and score.analysis
    label = records.judge(dataset_record_id=made.id, judge_definition=CLASSIFICATION_JUDGE)
    assert label.answer in {"polite", "rude"}

    records.delete(dataset_record_id=made.id)
    with pytest.raises(errors.ObservabilityError) as caught:
        records.fetch(dataset_record_id=made.id)
    assert caught.value.data.detail.error_code == "DATASET_RECORD_NOT_FOUND"

    records.bulk_delete(dataset_record_ids=[*listed[:2], made.id])
    remaining = datasets.list_records(dataset_id=dataset_id).records
    assert [r.id for r in remaining.results] == [listed[2], spanned.id]


def test_import_export_and_task_calls(sdk: Mistral, dataset) -> None:
    datasets = sdk.beta.observability.datasets
    source, target = dataset(2), dataset()
    ids = [r.id for r in datasets.list_records(dataset_id=source).records.results]

    task = datasets.import_from_dataset_records(dataset_id=target, dataset_record_ids=ids)
    assert task.status == "COMPLETED" and task.dataset_id == target
    assert task.result is not None and task.result.imported_record_count == 2
    copied = datasets.list_records(dataset_id=target).records
    assert copied.count == 2 and {r.id for r in copied.results}.isdisjoint(ids)

    from_file = datasets.import_from_file(dataset_id=target, file_id="file-abc")
    from_playground = datasets.import_from_playground(dataset_id=target, conversation_ids=["c-1"])
    for empty in (from_file, from_playground):
        assert empty.status == "COMPLETED" and empty.result.imported_record_count == 0
        assert "not emulated" in empty.message

    fetched = datasets.fetch_task(dataset_id=target, task_id=task.id)
    assert fetched.id == task.id and fetched.message == task.message
    tasks = datasets.list_tasks(dataset_id=target, page_size=2).tasks
    assert tasks.count == 3 and [t.id for t in tasks.results] == [task.id, from_file.id]
    assert tasks.next is not None

    export = datasets.export_to_jsonl(dataset_id=source)
    lines = httpx.get(export.file_url).text.splitlines()
    assert len(lines) == 2


def test_sdk_sees_injected_failures_as_errors(api_key: str) -> None:
    with EmulatorServer(fail_rate=1.0, seed=1) as server, Mistral(
        api_key=api_key, server_url=server.url
    ) as client:
        with pytest.raises(errors.MistralError) as caught:
            client.beta.observability.datasets.list()
        assert caught.value.status_code in {429, 500, 502, 503}
        server.configure(fail_rate=0.0)
        assert client.beta.observability.datasets.list().datasets.count == 0


def test_every_sdk_call_in_the_spec_is_exercised_above() -> None:
    """Fails when an SDK upgrade adds a datasets/records call these tests do not cover."""
    from mistralai.client.datasets import Datasets
    from mistralai.client.datasets_records import DatasetsRecords

    def calls(cls: type) -> set[str]:
        return {
            name for name, value in vars(cls).items()
            if callable(value) and not name.startswith("_") and not name.endswith("_async")
        }

    assert calls(Datasets) == {
        "create", "list", "fetch", "update", "delete", "list_records", "create_record",
        "import_from_file", "import_from_playground", "import_from_dataset_records",
        "export_to_jsonl", "fetch_task", "list_tasks",
        "import_from_spans",  # /imports/from-spans is not in the spec
    }
    assert calls(DatasetsRecords) == {
        "fetch", "delete", "bulk_delete", "judge", "update_payload", "update_properties",
    }
