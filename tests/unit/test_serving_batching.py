"""Dynamic batching: settings, the queue's timing rules, and per-request answers/errors/Accept on every
batch-capable runtime (each batched answer equals the one the request gets alone)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from modelhost.serving.batching import Batcher, BatchSettings, Invocation, invoke_batch, invoke_one
from modelhost.serving.errors import ModelLoadError, ModelServerError
from modelhost.serving.handler import Handler
from tests.runtime_artifacts import onnx_gemm_bytes, tiny_linear, torchscript_bytes


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "HF_TASK"):
        monkeypatch.delenv(name, raising=False)


def csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in np.atleast_2d(rows)).encode()


def _csv_numbers(body: bytes) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines() if line])


def check_same_as_alone(handler: Handler, invocations: list[Invocation]) -> list[object]:
    """Batched outcomes equal the outcomes of each request alone (bodies, types, error statuses)."""
    batched = invoke_batch(handler, invocations)
    assert len(batched) == len(invocations)
    for inv, got in zip(invocations, batched, strict=True):
        alone = invoke_one(handler, inv)
        if isinstance(alone, Exception):
            assert isinstance(got, type(alone)), (got, alone)
            if isinstance(alone, ModelServerError):
                assert isinstance(got, ModelServerError) and got.status == alone.status
            continue
        assert not isinstance(got, Exception), got
        assert got[1] == alone[1]
        if alone[1] == "application/json":
            np.testing.assert_allclose(np.array(json.loads(got[0]), dtype=float), json.loads(alone[0]), rtol=1e-5)
        elif alone[1] == "text/csv":  # numbers: a batched matrix product may round the last digit differently
            np.testing.assert_allclose(_csv_numbers(got[0]), _csv_numbers(alone[0]), rtol=1e-9)
        else:
            assert got[0] == alone[0]
    return batched


# --- settings -------------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    assert BatchSettings.from_env({}) is None
    assert BatchSettings.from_env({"SAGEMAKER_TS_BATCH_SIZE": "1"}) is None  # one per batch is off
    s = BatchSettings.from_env({"SAGEMAKER_TS_BATCH_SIZE": "32", "SAGEMAKER_TS_MAX_BATCH_DELAY": "10"})
    assert s == BatchSettings(32, 0.01)
    assert BatchSettings.from_env({"SAGEMAKER_TS_BATCH_SIZE": "8"}) == BatchSettings(8, 0.1)  # TorchServe's 100 ms


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGEMAKER_TS_BATCH_SIZE": "many"}, "SAGEMAKER_TS_BATCH_SIZE='many' is not an integer"),
        ({"SAGEMAKER_TS_BATCH_SIZE": "0"}, "SAGEMAKER_TS_BATCH_SIZE=0 must be between 1 and 1024"),
        ({"SAGEMAKER_TS_BATCH_SIZE": "4", "SAGEMAKER_TS_MAX_BATCH_DELAY": "soon"}, "SAGEMAKER_TS_MAX_BATCH_DELAY="),
        ({"SAGEMAKER_TS_BATCH_SIZE": "4", "SAGEMAKER_TS_MAX_BATCH_DELAY": "-1"}, "must be between 0 and 60000"),
    ],
)
def test_bad_settings_are_load_failures(env: dict[str, str], message: str) -> None:
    with pytest.raises(ModelLoadError) as exc:
        BatchSettings.from_env(env)
    assert message in exc.value.reason


# --- the queue ------------------------------------------------------------------------------------


class SlowModel:
    """Records each batch; takes ``seconds`` per batch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[list[bytes]] = []

    def __call__(self, invocations: list[Invocation]) -> list[tuple[bytes, str, str | None] | Exception]:
        self.batches.append([i.body for i in invocations])
        time.sleep(self.seconds)
        out: list[tuple[bytes, str, str | None] | Exception] = []
        for inv in invocations:
            if inv.body == b"bad":
                out.append(ModelServerError(400, "bad input"))
            else:
                out.append((inv.body.upper(), inv.accept or "text/plain", None))
        return out


def run_async(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_idle_model_runs_a_lone_request_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.0)

    async def main() -> float:
        batcher = Batcher(model, BatchSettings(8, 0.5), ThreadPoolExecutor(1))
        await batcher.submit(Invocation(b"warm"))
        t0 = time.perf_counter()
        assert await batcher.submit(Invocation(b"x")) == (b"X", "text/plain", None)
        return time.perf_counter() - t0

    elapsed = run_async(main())
    assert isinstance(elapsed, float) and elapsed < 0.2  # not the 500 ms delay


def test_requests_arriving_while_busy_share_a_batch_with_their_own_answers_and_errors() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.2)

    async def main() -> list[object]:
        batcher = Batcher(model, BatchSettings(4, 0.05), ThreadPoolExecutor(1))
        first = asyncio.ensure_future(batcher.submit(Invocation(b"first")))
        await asyncio.sleep(0.05)  # the model is busy with "first" now
        rest = [
            batcher.submit(Invocation(b"a", accept="text/a")),
            batcher.submit(Invocation(b"bad")),
            batcher.submit(Invocation(b"c", accept="text/c")),
        ]
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    out = run_async(main())
    assert isinstance(out, list)
    assert out[0] == (b"FIRST", "text/plain", None)
    assert out[1] == (b"A", "text/a", None) and out[3] == (b"C", "text/c", None)
    assert isinstance(out[2], ModelServerError) and out[2].status == 400  # only the bad one fails
    assert model.batches == [[b"first"], [b"a", b"bad", b"c"]]


def test_batch_closes_when_full_and_never_exceeds_the_size() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.1)

    async def main() -> float:
        batcher = Batcher(model, BatchSettings(3, 5.0), ThreadPoolExecutor(1))
        first = asyncio.ensure_future(batcher.submit(Invocation(b"0")))
        await asyncio.sleep(0.03)
        t0 = time.perf_counter()
        await asyncio.gather(first, *(batcher.submit(Invocation(str(i).encode())) for i in range(1, 7)))
        return time.perf_counter() - t0

    elapsed = run_async(main())
    assert [len(b) for b in model.batches] == [1, 3, 3]
    assert isinstance(elapsed, float) and elapsed < 2.0  # full batches do not wait for the 5 s delay


def test_a_partial_batch_waits_at_most_the_delay_after_the_model_frees() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.0)

    async def main() -> float:
        batcher = Batcher(model, BatchSettings(8, 0.3), ThreadPoolExecutor(1))
        release = threading.Event()
        blocker = SlowModel(0.0)

        def blocking(invs: list[Invocation]) -> list[tuple[bytes, str, str | None] | Exception]:
            release.wait(5)
            return blocker(invs)

        batcher.run = lambda invs: blocking(invs) if invs[0].body == b"block" else model(invs)
        held = asyncio.ensure_future(batcher.submit(Invocation(b"block")))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(batcher.submit(Invocation(b"late")))  # arrives while busy
        await asyncio.sleep(0.05)
        release.set()  # the model frees; "block" may come back, so "late" waits for it, 300 ms at most
        await held
        t0 = time.perf_counter()
        await waiting
        return time.perf_counter() - t0

    elapsed = run_async(main())
    assert isinstance(elapsed, float) and 0.25 <= elapsed < 0.8
    assert model.batches == [[b"late"]]


def test_closed_loop_clients_merge_into_full_batches() -> None:
    """16 clients each sending the next request when the last is answered: without waiting for the
    answered ones to come back they would alternate between a batch of 1 and one of 15 forever."""
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.01)

    async def main() -> None:
        batcher = Batcher(model, BatchSettings(32, 0.05), ThreadPoolExecutor(1))

        async def client(i: int) -> None:
            for _ in range(12):
                await batcher.submit(Invocation(str(i).encode()))
                await asyncio.sleep(0.001)  # the trip back to the client and its next request

        await asyncio.gather(*(client(i) for i in range(16)))

    run_async(main())
    sizes = [len(b) for b in model.batches]
    assert sizes[-4:] == [16, 16, 16, 16], sizes


def test_sequential_requests_never_wait() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.0)

    async def main() -> float:
        batcher = Batcher(model, BatchSettings(8, 0.5), ThreadPoolExecutor(1))
        t0 = time.perf_counter()
        for i in range(20):
            await batcher.submit(Invocation(str(i).encode()))
        return time.perf_counter() - t0

    elapsed = run_async(main())
    assert isinstance(elapsed, float) and elapsed < 0.5  # one request per batch, none waiting the 500 ms
    assert [len(b) for b in model.batches] == [1] * 20


def test_put_delivers_each_answer_and_error_on_the_loop_without_a_task_per_request() -> None:
    """The worker's path: ``put`` with a callback, so a queued request costs no task, coroutine or future."""
    from concurrent.futures import ThreadPoolExecutor

    model = SlowModel(0.05)

    async def main() -> tuple[list[tuple[bytes, object]], int, set[int]]:
        batcher = Batcher(model, BatchSettings(8, 0.05), ThreadPoolExecutor(1))
        delivered: list[tuple[bytes, object]] = []
        threads: set[int] = set()
        done = asyncio.Event()

        def deliver(token: bytes, outcome: object) -> None:
            threads.add(threading.get_ident())
            delivered.append((token, outcome))
            if len(delivered) == 5:
                done.set()

        batcher.put(Invocation(b"first"), deliver, b"first")
        await asyncio.sleep(0.01)  # the model is busy with "first"
        for body in (b"a", b"bad", b"c", b"d"):
            batcher.put(Invocation(body, accept="text/" + body.decode()), deliver, body)
        tasks = len(asyncio.all_tasks())  # this one and the batcher's loop, however many are queued
        await asyncio.wait_for(done.wait(), 5)
        return delivered, tasks, threads

    delivered, tasks, threads = run_async(main())  # type: ignore[misc]
    assert tasks == 2
    assert threads == {threading.get_ident()}  # on the loop's thread, not the model's
    by_token = dict(delivered)
    assert by_token[b"first"] == (b"FIRST", "text/plain", None)
    assert by_token[b"a"] == (b"A", "text/a", None) and by_token[b"d"] == (b"D", "text/d", None)
    assert isinstance(by_token[b"bad"], ModelServerError) and by_token[b"bad"].status == 400
    assert model.batches == [[b"first"], [b"a", b"bad", b"c", b"d"]]


def test_a_failing_delivery_does_not_stop_the_queue() -> None:
    model = SlowModel(0.0)

    async def main() -> object:
        batcher = Batcher(model, BatchSettings(4, 0.01))

        def broken(token: object, outcome: object) -> None:
            raise RuntimeError("the connection went away mid-write")

        batcher.put(Invocation(b"x"), broken, None)
        return await asyncio.wait_for(batcher.submit(Invocation(b"y")), 5)

    assert run_async(main()) == (b"Y", "text/plain", None)


# --- runtimes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x[:100], y[:100]


def test_sklearn_batch_per_request_shapes_accepts_and_errors(
    tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = diabetes
    joblib.dump(LinearRegression().fit(x, y), tmp_path / "model.joblib")
    h = Handler(tmp_path, "sklearn")
    invocations = [
        Invocation(csv(x[0]), "text/csv", "application/json"),
        Invocation(csv(x[1:4]), "text/csv", "text/csv"),  # three rows, CSV out
        Invocation(b"1,2,oops", "text/csv", "application/json"),  # its own 400
        Invocation(json.dumps(x[4:6].tolist()).encode(), "application/json", "application/json"),
        Invocation(csv(x[6][:5]), "text/csv", "application/json"),  # wrong width: runs alone, fails alone
        Invocation(csv(x[7]), "text/csv", "application/x-unknown"),  # its own 406
    ]
    out = check_same_as_alone(h, invocations)
    assert isinstance(out[2], ModelServerError) and out[2].status == 400
    assert isinstance(out[5], ModelServerError) and out[5].status == 406
    assert isinstance(out[4], Exception)
    assert json.loads(out[0][0]) == pytest.approx(LinearRegression().fit(x, y).predict(x[:1]).tolist())  # type: ignore[index]


def test_xgboost_batch(tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    import xgboost as xgb

    x, y = diabetes
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=y), num_boost_round=3)
    booster.save_model(str(tmp_path / "xgboost-model.json"))
    h = Handler(tmp_path, "xgboost")
    invocations = [Invocation(csv(x[i]), "text/csv", "text/csv") for i in range(4)]
    invocations.append(Invocation(json.dumps(x[5].tolist()).encode(), "application/json", "application/json"))
    invocations.append(Invocation(b"1,2,nope", "text/csv", "text/csv"))  # its own 400
    invocations.append(Invocation(csv(x[6]), "text/csv", "application/x-unknown"))  # its own 406
    out = check_same_as_alone(h, invocations)
    assert all(not isinstance(o, Exception) for o in out[:5])
    assert isinstance(out[5], ModelServerError) and out[5].status == 400
    assert isinstance(out[6], ModelServerError) and out[6].status == 406
    assert out[4][1] == "application/json" and out[0][1] == "text/csv"  # type: ignore[index]


def test_pytorch_batch(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(torchscript_bytes(tiny_linear(seed=2, n_in=3, n_out=2)))
    h = Handler(tmp_path, "pytorch")
    invocations = [
        Invocation(json.dumps([[1.0, 2.0, 3.0]]).encode(), "application/json", "application/json"),
        Invocation(json.dumps([[0.0, 1.0, 0.5], [2.0, 2.0, 2.0]]).encode(), "application/json", "text/csv"),
        Invocation(json.dumps([[1.0, 2.0]]).encode(), "application/json", "application/json"),  # wrong width
        Invocation(b"[[1, 2,", "application/json", "application/json"),
    ]
    out = check_same_as_alone(h, invocations)
    assert isinstance(out[2], Exception) and isinstance(out[3], ModelServerError)


def test_onnx_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    (tmp_path / "model.onnx").write_bytes(onnx_gemm_bytes(w, b))
    h = Handler(tmp_path, "onnx")
    invocations = [
        Invocation(json.dumps([1.0, 2.0, 3.0]).encode(), "application/json", "application/json"),
        Invocation(json.dumps({"inputs": [[0.0, 1.0, 0.5], [2.0, 2.0, 2.0]]}).encode(), "application/json", "text/csv"),
        Invocation(json.dumps([[1.0, 2.0]]).encode(), "application/json", "application/json"),  # fails alone
    ]
    out = check_same_as_alone(h, invocations)
    assert isinstance(out[2], Exception) and not isinstance(out[1], Exception)


def test_user_predict_fn_taking_a_list(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            CALLS = []

            def model_fn(model_dir):
                return None

            def input_fn(data, content_type):
                if data == "boom":
                    raise ValueError("cannot read boom")
                return data

            def predict_fn(inputs: list, model):
                CALLS.append(len(inputs))
                if "fail" in inputs:
                    raise RuntimeError("the batch had a bad input")
                return [s.upper() for s in inputs]

            def output_fn(prediction, accept):
                return prediction, accept
            """
        )
    )
    h = Handler(tmp_path, "python")
    invs = [Invocation(t.encode(), "text/csv", "text/plain") for t in ("a", "boom", "b")]
    invs.append(Invocation(b"c", "text/csv", "text/x-other"))
    out = invoke_batch(h, invs)
    assert out[0] == (b"A", "text/plain", None) and out[2] == (b"B", "text/plain", None)
    assert out[3] == (b"C", "text/x-other", None)  # its own Accept
    assert isinstance(out[1], ValueError)
    calls = h.user_module.CALLS  # type: ignore[union-attr]
    assert calls == [3]  # one call for the three that decoded
    out = invoke_batch(h, [Invocation(t.encode(), "text/csv", "text/plain") for t in ("x", "fail", "y")])
    assert out[0] == (b"X", "text/plain", None) and out[2] == (b"Y", "text/plain", None)
    assert isinstance(out[1], RuntimeError)  # the failed batch ran again one by one: only "fail" fails
    assert calls == [3, 3, 1, 1, 1]
    assert h.invoke(b"solo", "text/csv", "text/plain")[0] == b"SOLO"  # alone it gets a list of one


def test_huggingface_sentence_embeddings_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers")
    from tests.hf_models import minilm_dir

    monkeypatch.setenv("HF_TASK", "sentence-embeddings")
    h = Handler(minilm_dir(), "huggingface")
    invocations = [
        Invocation(json.dumps({"inputs": "a first sentence"}).encode(), "application/json", "application/json"),
        Invocation(json.dumps({"inputs": "the second one, longer than the first"}).encode(), "application/json"),
        Invocation(json.dumps({"inputs": 3}).encode(), "application/json", "application/json"),  # its own 400
        Invocation(
            json.dumps({"inputs": "normalized", "parameters": {"normalize_embeddings": True}}).encode(),
            "application/json",
            "application/json",
        ),
        Invocation(json.dumps({"inputs": "csv please"}).encode(), "application/json", "text/csv"),
    ]
    batched = invoke_batch(h, invocations)
    for inv, got in zip(invocations, batched, strict=True):
        alone = invoke_one(h, inv)
        if isinstance(alone, Exception):
            assert isinstance(got, ModelServerError) and got.status == 400
            continue
        assert not isinstance(got, Exception) and got[1] == alone[1]
        if got[1] == "application/json":
            a, b = json.loads(got[0])["embeddings"], json.loads(alone[0])["embeddings"]
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_huggingface_text_classification_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from tests.hf_models import nli_classifier

    model_dir = nli_classifier(tmp_path / "clf")
    monkeypatch.setenv("HF_TASK", "text-classification")
    h = Handler(model_dir, "huggingface")
    texts = ["the movie was great", "terrible camera", "hello world from paris france and berlin germany"]
    invocations = [Invocation(json.dumps({"inputs": t}).encode(), "application/json") for t in texts]
    invocations.append(Invocation(json.dumps({"inputs": texts[0], "parameters": {"top_k": 2}}).encode()))
    batched = invoke_batch(h, invocations)
    for inv, got in zip(invocations, batched, strict=True):
        alone = invoke_one(h, inv)
        assert not isinstance(got, Exception) and not isinstance(alone, Exception)
        a, b = json.loads(got[0]), json.loads(alone[0])
        assert [r["label"] for r in a] == [r["label"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
