"""The controller's reply store: retries answered from it, run-changing replies outlive read-only floods."""

import pytest

from dynamicrl.protocol.messages import ParamsRequest, PatchReply, PatchRequest, PatchStatus, StatusRequest
from dynamicrl.services.controller import replies
from dynamicrl.services.controller.replies import IdReused, Kept, Pending, Replies


def answer(store: Replies, request_id: str, request, reply) -> None:
    store.begin(request_id, request, [b"route"])
    assert store.answered(request_id, reply) == [[b"route"]]


def test_a_patch_reply_outlives_any_number_of_status_polls():
    store = Replies()
    patch = PatchRequest(changes={"ppo.lr": 0.001})
    answer(store, "patch-1", patch, PatchReply(patch_id="p1", status=PatchStatus.PENDING))
    for i in range(3 * replies.READS_KEPT):
        answer(store, f"status-{i}", StatusRequest(), PatchReply(patch_id="x", status=PatchStatus.PENDING))
    kept = store.known("patch-1", patch)
    assert isinstance(kept, Kept) and kept.reply == PatchReply(patch_id="p1", status=PatchStatus.PENDING)
    assert len(store.reads) == replies.READS_KEPT and store.known("status-0", StatusRequest()) is None


def test_an_id_reused_with_another_body_is_refused_and_a_pending_retry_joins():
    store = Replies()
    store.begin("id-1", StatusRequest(), [b"a"])
    with pytest.raises(IdReused, match="used for another request"):
        store.known("id-1", ParamsRequest())
    pending = store.known("id-1", StatusRequest())
    assert isinstance(pending, Pending)
    pending.routes.append([b"b"])
    assert store.answered("id-1", PatchReply(patch_id="x", status=PatchStatus.PENDING)) == [[b"a"], [b"b"]]


def test_kept_replies_are_bounded_by_bytes(monkeypatch):
    monkeypatch.setattr(replies, "BYTES_KEPT", 2_000)
    store = Replies()
    big = PatchReply(patch_id="x" * 900, status=PatchStatus.PENDING)
    for i in range(5):
        answer(store, f"p{i}", PatchRequest(changes={"ppo.lr": i / 10}), big)
    assert store.changes.size <= 2_000 and list(store.changes) == ["p3", "p4"]
