"""devcluster HTTP answers checked against Nomad's own handlers (command/agent/*_endpoint.go).

Each test names the Nomad source it mirrors; these are the places a real Nomad client trips when
devcluster answers differently (status code, error text, which namespace a write lands in).
"""

from __future__ import annotations

import asyncio
import time

from test_api_http import Client, parsed_job, run

from nomad_triton.devcluster.store import Store


def test_versions_of_missing_job_is_nomads_own_404() -> None:
    """job_endpoint.go jobVersions: `len(out.Versions) == 0` -> 404 "job versions not found"."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/job/nope/versions")
        assert (r.status_code, r.text) == (404, "job versions not found")
        await c.post("/v1/jobs", json={"Job": await parsed_job(c)})
        r = await c.get("/v1/job/web/versions")
        assert r.status_code == 200 and [v["Version"] for v in r.json()["Versions"]] == [0]

    run(t)


def test_wrong_method_is_405_invalid_method() -> None:
    """http.go: CodedError(405, ErrInvalidMethod) with ErrInvalidMethod = "Invalid method"."""
    async def t(c: Client, store: Store) -> None:
        for method, path in (("PATCH", "/v1/jobs"), ("DELETE", "/v1/job/web/versions"),
                             ("POST", "/v1/job/web/allocations"), ("GET", "/v1/jobs/parse")):
            r = await c.request(method, path)
            assert (r.status_code, r.text) == (405, "Invalid method"), (method, path)

    run(t)


def test_write_namespace_query_param_wins_over_job_namespace() -> None:
    """job_endpoint.go namespaceForJob: ?namespace= first, then the body's Namespace, then the job's."""
    async def t(c: Client, store: Store) -> None:
        job = await parsed_job(c)
        job["Namespace"] = "default"
        r = await c.post("/v1/jobs?namespace=team", json={"Job": job})
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/job/web?namespace=team")).json()["Namespace"] == "team"
        assert (await c.get("/v1/job/web")).status_code == 404
        # No query param: the request body's WriteRequest Namespace beats the job's.
        r = await c.put("/v1/job/web", json={"Job": job, "Namespace": "team"})
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/job/web")).status_code == 404

    run(t, {"server": {"namespaces": ["team"]}})


def test_bool_flags_parse_like_go_strconv() -> None:
    """jobDelete: `if purgeStr != ""` then strconv.ParseBool, an uncoded (500) error otherwise."""
    async def t(c: Client, store: Store) -> None:
        await c.post("/v1/jobs", json={"Job": await parsed_job(c)})
        r = await c.delete("/v1/job/web?purge=yes")
        assert r.status_code == 500
        assert r.text == ('Failed to parse value of "purge" (yes) as a bool: '
                          'strconv.ParseBool: parsing "yes": invalid syntax')
        # Bare `?purge` is an empty value: Nomad reads it as false, so the job is stopped, not purged.
        assert (await c.delete("/v1/job/web?purge")).status_code == 200
        assert (await c.get("/v1/job/web")).json()["Stop"] is True
        assert (await c.delete("/v1/job/web?purge=True")).status_code == 200  # requests' bool text
        assert (await c.get("/v1/job/web")).status_code == 404
        r = await c.get("/v1/job/web/versions?diffs=maybe")
        assert r.status_code == 500 and r.text.startswith('Failed to parse value of "diffs"')

    run(t)


def test_logs_argument_errors_use_fs_endpoint_texts() -> None:
    """fs_endpoint.go Logs: 400s in its order; `type` has no default; unknown alloc 404 with the ID."""
    async def t(c: Client, store: Store) -> None:
        base = "/v1/client/fs/logs/abc"
        cases = [
            ({"type": "stdout"}, 400, "must provide task name"),
            ({"task": "t"}, 400, "must provide log type (stdout/stderr)"),
            ({"task": "t", "type": "both"}, 400, "must provide log type (stdout/stderr)"),
            ({"task": "t", "type": "stdout", "plain": "yes"}, 400,
             'failed to parse plain field to boolean: strconv.ParseBool: parsing "yes": invalid syntax'),
            ({"task": "t", "type": "stdout", "follow": "x"}, 400,
             'failed to parse follow field to boolean: strconv.ParseBool: parsing "x": invalid syntax'),
            ({"task": "t", "type": "stdout", "origin": "middle"}, 400, "origin must be start or end"),
            ({"task": "t", "type": "stdout", "offset": "ten"}, 400,
             'error parsing offset: strconv.ParseInt: parsing "ten": invalid syntax'),
            ({"task": "t", "type": "stderr", "plain": "true"}, 404, 'Unknown allocation "abc"'),
        ]
        for params, status, text in cases:
            r = await c.get(base, params=params)
            assert (r.status_code, r.text) == (status, text), params

    run(t)


def test_event_stream_argument_errors() -> None:
    """event_endpoint.go: bad index / a topic with two colons are 400s with Nomad's texts."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/event/stream", params={"topic": "Job:a:b"})
        assert (r.status_code, r.text) == (
            400, "Invalid topic query: error parsing topics: Invalid key value pair for topic, topic: Job:a:b")
        r = await c.get("/v1/event/stream", params={"index": "x"})
        assert (r.status_code, r.text) == (400, 'Unable to parse index: strconv.Atoi: parsing "x": invalid syntax')

    run(t)


def test_scale_target_job_must_match_url_and_parse_empty_text() -> None:
    """jobScaleAction: Target.Job != URL ID -> 400; JobsParseRequest: empty JobHCL -> "Job spec is empty"."""
    async def t(c: Client, store: Store) -> None:
        await c.post("/v1/jobs", json={"Job": await parsed_job(c)})
        r = await c.post("/v1/job/web/scale", json={"Count": 2, "Target": {"Job": "other", "Group": "api"}})
        assert (r.status_code, r.text) == (400, "job ID in payload did not match URL")
        r = await c.post("/v1/jobs/parse", json={"JobHCL": ""})
        assert (r.status_code, r.text) == (400, "Job spec is empty")

    run(t)


def test_job_services_endpoint() -> None:
    """jobServiceRegistrations: 404 "job not found" for no job, the job's registrations otherwise."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/job/web/services")
        assert (r.status_code, r.text) == (404, "job not found")
        await c.post("/v1/jobs", json={"Job": await parsed_job(c)})
        assert (await c.get("/v1/job/web/services")).json() == []
        reg = {"ID": "_nomad-task-a1-group-api-http-http", "ServiceName": "http", "Namespace": "default",
               "JobID": "web", "AllocID": "a1", "NodeID": "n1", "Datacenter": "dc1", "Tags": [],
               "Address": "127.0.0.1", "Port": 8080}
        store.upsert("services", reg["ID"], dict(reg))
        store.upsert("services", "other", dict(reg, ID="other", JobID="other"))
        r = await c.get("/v1/job/web/services")
        assert r.status_code == 200 and [s["ID"] for s in r.json()] == [reg["ID"]]
        assert int(r.headers["X-Nomad-Index"]) >= 1

    run(t)


def test_unknown_region_has_no_path() -> None:
    """rpc.go forward: a region without servers is structs.ErrNoRegionPath ("No path to region")."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/jobs", params={"region": "eu"})
        assert (r.status_code, r.text) == (500, "No path to region")
        assert (await c.get("/v1/jobs", params={"region": "r1"})).status_code == 200
        assert (await c.get("/v1/regions", params={"region": "eu"})).json() == ["r1"]  # agent-local
        # Job writes map "global" to the agent's own region (job_endpoint.go regionForJob).
        job = await parsed_job(c)
        assert (await c.post("/v1/jobs", params={"region": "global"}, json={"Job": job})).status_code == 200
        assert (await c.get("/v1/job/web", params={"region": "global"})).status_code == 500
        # Without ?region= the job's own Region picks the target region (regionForJob).
        r = await c.post("/v1/jobs", json={"Job": dict(job, Region="eu")})
        assert (r.status_code, r.text) == (500, "No path to region")
        assert (await c.post("/v1/jobs", json={"Job": dict(job, Region="r1")})).status_code == 200
        r = await c.post("/v1/job/web/plan", json={"Job": dict(job, Region="eu")})
        assert (r.status_code, r.text) == (500, "No path to region")

    run(t, {"server": {"region": "r1"}})


def test_promote_requires_body_deployment_id_fail_takes_none() -> None:
    """deployment_endpoint.go: promote decodes its body and checks DeploymentID before the lookup."""
    async def t(c: Client, store: Store) -> None:
        r = await c.post("/v1/deployment/promote/d1", json={"All": True})
        assert (r.status_code, r.text) == (400, "DeploymentID must be specified")
        r = await c.post("/v1/deployment/promote/d1", json={"DeploymentID": "d2", "All": True})
        assert (r.status_code, r.text) == (400, "Deployment ID does not match")
        r = await c.post("/v1/deployment/promote/d1", json={"DeploymentID": "d1", "All": True})
        assert (r.status_code, r.text) == (404, "deployment not found")
        r = await c.post("/v1/deployment/fail/d1")  # no body at all, as Nomad's deploymentFail reads none
        assert (r.status_code, r.text) == (404, "deployment not found")

    run(t)


def test_alloc_list_stubs_select_fields_like_nomad() -> None:
    """Allocation.Stub(fields): no AllocatedResources unless ?resources=true (job allocation lists
    never carry it), TaskStates dropped by ?task_states=false; allocStop's 404 "allocation not found"."""
    async def t(c: Client, store: Store) -> None:
        alloc = {"ID": "a1", "EvalID": "e1", "Name": "web.api[0]", "Namespace": "default", "NodeID": "n1",
                 "JobID": "web", "TaskGroup": "api", "DesiredStatus": "run", "ClientStatus": "running",
                 "TaskStates": {"srv": {"State": "running"}}, "CreateIndex": 5, "ModifyIndex": 5,
                 "AllocatedResources": {"Shared": {"Ports": [{"Label": "http", "Value": 2000}]}},
                 "Job": {"Type": "service", "Version": 0}}
        store.upsert("allocs", "a1", alloc)
        plain = (await c.get("/v1/allocations")).json()[0]
        assert "AllocatedResources" not in plain and plain["TaskStates"] and plain["JobType"] == "service"
        assert "AllocatedResources" not in (await c.get("/v1/job/web/allocations")).json()[0]
        rich = (await c.get("/v1/allocations", params={"resources": "true", "task_states": "false"})).json()[0]
        assert rich["AllocatedResources"]["Shared"]["Ports"][0]["Value"] == 2000 and rich["TaskStates"] is None
        r = await c.get("/v1/allocations", params={"resources": "yes"})
        assert r.status_code == 500 and r.text.startswith('Failed to parse value of "resources" (yes)')
        full = (await c.get("/v1/allocation/a1")).json()
        assert full["AllocatedResources"]["Shared"]["Ports"][0]["Value"] == 2000
        r = await c.post("/v1/allocation/nope/stop")
        assert (r.status_code, r.text) == (404, "allocation not found")

    run(t)


def test_variable_cas_and_method_errors() -> None:
    """variable_endpoint.go: parseCAS wraps strconv.ParseUint's error; an unknown method is a 400."""
    async def t(c: Client, store: Store) -> None:
        for bad in ("x", "-1"):
            r = await c.put("/v1/var/a/b", params={"cas": bad}, json={"Items": {"k": "v"}})
            assert (r.status_code, r.text) == (
                400, f'can not parse cas: strconv.ParseUint: parsing "{bad}": invalid syntax')
        assert (await c.put("/v1/var/a/b", params={"cas": "0"}, json={"Items": {"k": "v"}})).status_code == 200
        r = await c.patch("/v1/var/a/b", json={"Items": {"k": "v"}})
        assert (r.status_code, r.text) == (400, "Invalid method")

    run(t)


def test_blocking_query_parameter_errors() -> None:
    """http.go parseWait: ?wait is time.ParseDuration (unit required), ?index is ParseUint; bare 400s."""
    async def t(c: Client, store: Store) -> None:
        for params, text in (({"index": "1", "wait": "30"}, "Invalid wait time"),
                             ({"index": "1", "wait": "soon"}, "Invalid wait time"),
                             ({"index": "-1"}, "Invalid index"), ({"index": "x"}, "Invalid index")):
            r = await c.get("/v1/jobs", params=params)
            assert (r.status_code, r.text) == (400, text), params
        r = await c.get("/v1/jobs", params={"index": "0", "wait": "0"})
        assert r.status_code == 200 and r.json() == []
        r = await c.get("/v1/jobs", params={"index": "1", "wait": "10ms"})
        assert r.status_code == 200 and int(r.headers["X-Nomad-Index"]) >= 1

    run(t)


def test_parse_failure_text_is_jobs_parse_requests() -> None:
    """JobsParseRequest: 400 "Failed to parse job: <jobspec2 diagnostics>" (input.hcl:line,col)."""
    async def t(c: Client, store: Store) -> None:
        r = await c.post("/v1/jobs/parse", json={"JobHCL": 'job "j" {\n  x = = 1\n}\n'})
        assert r.status_code == 400
        assert r.text.startswith("Failed to parse job: input.hcl:2") and "error parsing" not in r.text

    run(t)


def test_missing_object_is_a_blocking_query_result_with_meta_headers() -> None:
    """setMeta runs before jobQuery's 404, and ?index= blocks until the object can exist: a client
    waiting for a job to appear blocks instead of spinning on instant 404s."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/job/web")
        assert (r.status_code, r.text) == (404, "job not found")
        index = int(r.headers["X-Nomad-Index"])
        assert index >= 1 and r.headers["X-Nomad-KnownLeader"] == "true"
        job = await parsed_job(c)

        async def later() -> float:
            await asyncio.sleep(0.3)
            await c.post("/v1/jobs", json={"Job": job})
            return time.monotonic()

        writer = asyncio.create_task(later())
        t0 = time.monotonic()
        r = await c.get("/v1/job/web", params={"index": index, "wait": "5s"})
        done, changed_at = time.monotonic(), await writer
        assert r.status_code == 200 and r.json()["ID"] == "web"
        assert done - t0 >= 0.25 and done - changed_at < 0.5
        # Still missing when the wait runs out: 404 after about `wait`, with the index header.
        t0 = time.monotonic()
        r = await c.get("/v1/deployment/nope", params={"index": 10_000, "wait": "200ms"})
        assert r.status_code == 404 and 0.19 <= time.monotonic() - t0 < 1.0 and "X-Nomad-Index" in r.headers

    run(t)


def test_item_reads_take_exact_ids_lists_take_prefixes() -> None:
    """AllocByID/EvalByID are exact lookups: a short ID is 404; `?prefix=` on the list finds it."""
    async def t(c: Client, store: Store) -> None:
        out = (await c.post("/v1/jobs", json={"Job": await parsed_job(c)})).json()
        eval_id = out["EvalID"]
        assert (await c.get(f"/v1/evaluation/{eval_id}")).status_code == 200
        r = await c.get(f"/v1/evaluation/{eval_id[:8]}")
        assert (r.status_code, r.text) == (404, "eval not found")
        listed = (await c.get("/v1/evaluations", params={"prefix": eval_id[:8]})).json()
        assert [e["ID"] for e in listed] == [eval_id]

    run(t)


def test_deployment_allocations_of_unknown_deployment_is_empty() -> None:
    """Deployment.Allocations has no not-found case: AllocsByDeployment of an unknown ID is []."""
    async def t(c: Client, store: Store) -> None:
        r = await c.get("/v1/deployment/allocations/nope")
        assert r.status_code == 200 and r.json() == [] and "X-Nomad-Index" in r.headers
        store.upsert("allocs", "a1", {"ID": "a1", "Namespace": "default", "DeploymentID": "d1", "JobID": "web",
                                      "ClientStatus": "running", "Job": {"Type": "service", "Version": 0}})
        assert [a["ID"] for a in (await c.get("/v1/deployment/allocations/d1")).json()] == ["a1"]
        assert (await c.get("/v1/deployment/allocations/d1", params={"namespace": "team"})).json() == []

    run(t, {"server": {"namespaces": ["team"]}})
