package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

type namedCheck struct {
	name string
	fn   func(r *runner) (string, error)
}

// checks run in this order; later ones use what earlier ones registered (r.state).
var checks = []namedCheck{
	{"status", checkStatus},
	{"agent-self", checkAgentSelf},
	{"acl-token-self", checkACLSelf},
	{"parse-validate", checkParseValidate},
	{"plan", checkPlan},
	{"register-enforce-index", checkRegisterEnforceIndex},
	{"deployment-successful", checkDeployment},
	{"job-blocking-query", checkJobBlocking},
	{"allocations-ports", checkAllocations},
	{"scale-events", checkScale},
	{"versions-summary", checkVersionsSummary},
	{"evaluations", checkEvaluations},
	{"nodes", checkNodes},
	{"node-pools", checkNodePools},
	{"services", checkServices},
	{"alloc-stop", checkAllocStop},
	{"event-stream", checkEventStream},
	{"variables", checkVariables},
	{"variable-locks", checkLocks},
	{"alloc-logs", checkLogs},
	{"scaling-policies", checkScalingPolicies},
	{"revert", checkRevert},
	{"canary-promote", checkCanaryPromote},
	{"failed-task", checkFailedTask},
	{"infeasible-gpu-plan", checkInfeasibleGPU},
	{"deregister-purge", checkDeregisterPurge},
}

func checkStatus(r *runner) (string, error) {
	leader, err := r.c.Status().Leader()
	if err != nil {
		return "", fmt.Errorf("leader: %w", err)
	}
	if leader == "" {
		return "", errors.New("leader: empty address")
	}
	peers, err := r.c.Status().Peers()
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	if len(peers) == 0 {
		return "", errors.New("peers: none")
	}
	regions, err := r.c.Regions().List()
	if err != nil {
		return "", fmt.Errorf("regions: %w", err)
	}
	if len(regions) == 0 {
		return "", errors.New("regions: none")
	}
	return fmt.Sprintf("leader %s, %d peer(s), regions %v", leader, len(peers), regions), nil
}

func checkAgentSelf(r *runner) (string, error) {
	self, err := r.c.Agent().Self()
	if err != nil {
		return "", err
	}
	if self.Member.Name == "" {
		return "", errors.New("member has no name")
	}
	if _, ok := self.Config["Region"]; !ok {
		return "", errors.New("config has no Region")
	}
	region, err := r.c.Agent().Region()
	if err != nil {
		return "", fmt.Errorf("region: %w", err)
	}
	return fmt.Sprintf("member %s, region %s", self.Member.Name, region), nil
}

func (r *runner) parseWeb(count int, rev string) (*api.Job, error) {
	return r.c.Jobs().ParseHCL(webJobHCL(r.webID(), r.python, r.dir, count, rev), true)
}

func checkParseValidate(r *runner) (string, error) {
	job, err := r.parseWeb(1, "1")
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	if job.ID == nil || *job.ID != r.webID() || len(job.TaskGroups) != 1 {
		return "", fmt.Errorf("parse: unexpected job %+v", job)
	}
	tg := job.TaskGroups[0]
	if tg.Update == nil || tg.Update.MinHealthyTime == nil || *tg.Update.MinHealthyTime != time.Second {
		return "", fmt.Errorf("parse: update.min_healthy_time not 1s: %+v", tg.Update)
	}
	if tg.Scaling == nil || tg.Scaling.Max == nil || *tg.Scaling.Max != 3 {
		return "", fmt.Errorf("parse: scaling block lost: %+v", tg.Scaling)
	}
	resp, _, err := r.c.Jobs().Validate(job, nil)
	if err != nil {
		return "", fmt.Errorf("validate: %w", err)
	}
	if resp.Error != "" || len(resp.ValidationErrors) > 0 {
		return "", fmt.Errorf("validate: %s %v", resp.Error, resp.ValidationErrors)
	}
	bad := *job
	bad.TaskGroups = []*api.TaskGroup{}
	resp, _, err = r.c.Jobs().Validate(&bad, nil)
	if err != nil {
		return "", fmt.Errorf("validate (no groups): %w", err)
	}
	if resp.Error == "" {
		return "", errors.New("validate: a job without task groups was accepted")
	}
	return "parsed, canonicalized, valid; a job without groups is refused", nil
}

func checkPlan(r *runner) (string, error) {
	job, err := r.parseWeb(1, "1")
	if err != nil {
		return "", err
	}
	plan, _, err := r.c.Jobs().Plan(job, true, nil)
	if err != nil {
		return "", err
	}
	if plan.Diff == nil || plan.Diff.Type != "Added" {
		return "", fmt.Errorf("diff type %v, want Added", plan.Diff)
	}
	if plan.Annotations == nil || plan.Annotations.DesiredTGUpdates["web"] == nil ||
		plan.Annotations.DesiredTGUpdates["web"].Place != 1 {
		return "", fmt.Errorf("annotations do not place 1 web alloc: %+v", plan.Annotations)
	}
	if len(plan.FailedTGAllocs) != 0 {
		return "", fmt.Errorf("unexpected failed placements: %v", plan.FailedTGAllocs)
	}
	return fmt.Sprintf("diff Added, place 1, JobModifyIndex %d", plan.JobModifyIndex), nil
}

func checkRegisterEnforceIndex(r *runner) (string, error) {
	job, err := r.parseWeb(1, "1")
	if err != nil {
		return "", err
	}
	resp, _, err := r.c.Jobs().EnforceRegister(job, 0, nil)
	if err != nil {
		return "", fmt.Errorf("first register: %w", err)
	}
	if resp.EvalID == "" || resp.JobModifyIndex == 0 {
		return "", fmt.Errorf("register response lacks EvalID/JobModifyIndex: %+v", resp)
	}
	_, _, err = r.c.Jobs().EnforceRegister(job, 0, nil)
	if err == nil || !strings.Contains(err.Error(), "Enforcing job modify index 0") {
		return "", fmt.Errorf("second register with index 0 not refused as Nomad does: %v", err)
	}
	stale := resp.JobModifyIndex + 1000
	_, _, err = r.c.Jobs().EnforceRegister(job, stale, nil)
	if err == nil || !strings.Contains(err.Error(), "conflicting job modify index") {
		return "", fmt.Errorf("register with a stale index not refused as Nomad does: %v", err)
	}
	info, _, err := r.c.Jobs().Info(r.webID(), nil)
	if err != nil {
		return "", fmt.Errorf("info: %w", err)
	}
	if info.SubmitTime == nil || *info.SubmitTime < time.Now().Add(-time.Hour).UnixNano() {
		return "", fmt.Errorf("SubmitTime is not unix nanoseconds: %v", info.SubmitTime)
	}
	r.state["eval"] = resp.EvalID
	return fmt.Sprintf("registered at %d; index 0 and %d refused", resp.JobModifyIndex, stale), nil
}

func checkDeployment(r *runner) (string, error) {
	var dep *api.Deployment
	state, err := waitFor("the deployment to succeed", 90*time.Second, func() (bool, string, error) {
		d, _, err := r.c.Jobs().LatestDeployment(r.webID(), nil)
		if err != nil {
			return false, "", err
		}
		if d == nil {
			return false, "no deployment yet", nil
		}
		dep = d
		if d.Status == "failed" || d.Status == "cancelled" {
			return false, d.Status, fmt.Errorf("deployment %s: %s", d.Status, d.StatusDescription)
		}
		return d.Status == "successful", d.Status, nil
	})
	if err != nil {
		return state, err
	}
	full, _, err := r.c.Deployments().Info(dep.ID, nil)
	if err != nil {
		return "", fmt.Errorf("deployment info: %w", err)
	}
	tg := full.TaskGroups["web"]
	if tg == nil || tg.HealthyAllocs != 1 || tg.DesiredTotal != 1 {
		return "", fmt.Errorf("deployment state for web: %+v", tg)
	}
	allocs, _, err := r.c.Deployments().Allocations(dep.ID, nil)
	if err != nil {
		return "", fmt.Errorf("deployment allocations: %w", err)
	}
	if len(allocs) != 1 || allocs[0].DeploymentStatus == nil || allocs[0].DeploymentStatus.Healthy == nil ||
		!*allocs[0].DeploymentStatus.Healthy {
		return "", fmt.Errorf("deployment allocations not healthy: %d", len(allocs))
	}
	if allocs[0].DeploymentStatus.Timestamp.IsZero() {
		return "", errors.New("alloc DeploymentStatus.Timestamp is empty")
	}
	list, _, err := r.c.Deployments().List(nil)
	if err != nil {
		return "", fmt.Errorf("deployments list: %w", err)
	}
	if len(list) == 0 {
		return "", errors.New("deployments list is empty")
	}
	r.state["deployment"] = dep.ID
	return fmt.Sprintf("deployment %s successful, 1 healthy", dep.ID[:8]), nil
}

func (r *runner) runningAlloc() (*api.Allocation, error) {
	stubs, _, err := r.c.Jobs().Allocations(r.webID(), false, nil)
	if err != nil {
		return nil, err
	}
	for _, s := range stubs {
		if s.ClientStatus == "running" && s.DesiredStatus == "run" {
			alloc, _, err := r.c.Allocations().Info(s.ID, nil)
			return alloc, err
		}
	}
	return nil, fmt.Errorf("no running allocation among %d", len(stubs))
}

func checkAllocations(r *runner) (string, error) {
	alloc, err := r.runningAlloc()
	if err != nil {
		return "", err
	}
	if alloc.AllocatedResources == nil || len(alloc.AllocatedResources.Shared.Ports) != 1 {
		return "", fmt.Errorf("allocated ports: %+v", alloc.AllocatedResources)
	}
	port := alloc.AllocatedResources.Shared.Ports[0]
	if port.Label != "http" || port.Value <= 0 {
		return "", fmt.Errorf("port mapping %+v", port)
	}
	ts := alloc.TaskStates["server"]
	if ts == nil || ts.State != "running" || ts.StartedAt.IsZero() {
		return "", fmt.Errorf("task state %+v", ts)
	}
	if len(ts.Events) == 0 || ts.Events[0].Time == 0 {
		return "", errors.New("task events carry no unix-nanosecond Time")
	}
	if alloc.CreateTime == 0 || alloc.ModifyTime == 0 {
		return "", errors.New("alloc CreateTime/ModifyTime missing")
	}
	url := fmt.Sprintf("http://%s:%d/", hostOr(port.HostIP), port.Value)
	resp, err := http.Get(url)
	if err != nil {
		return "", fmt.Errorf("task not reachable on its allocated port: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	all, _, err := r.c.Allocations().List(&api.QueryOptions{Params: map[string]string{"resources": "true"}})
	if err != nil {
		return "", fmt.Errorf("allocations list: %w", err)
	}
	if len(all) == 0 {
		return "", errors.New("allocations list empty")
	}
	nodeAllocs, _, err := r.c.Nodes().Allocations(alloc.NodeID, nil)
	if err != nil {
		return "", fmt.Errorf("node allocations: %w", err)
	}
	if len(nodeAllocs) == 0 {
		return "", errors.New("node allocations empty")
	}
	checks, err := r.c.Allocations().Checks(alloc.ID, nil)
	if err != nil {
		return "", fmt.Errorf("alloc checks: %w", err)
	}
	if len(checks) != 1 {
		return "", fmt.Errorf("%d check results, want 1", len(checks))
	}
	for _, c := range checks {
		if c.Status != "success" || c.Timestamp == 0 {
			return "", fmt.Errorf("check result %+v", c)
		}
	}
	r.state["alloc"] = alloc.ID
	return fmt.Sprintf("alloc %s serves on %s", alloc.ID[:8], url), nil
}

func hostOr(ip string) string {
	if ip == "" || ip == "0.0.0.0" {
		return "127.0.0.1"
	}
	return ip
}

func checkScale(r *runner) (string, error) {
	two := 2
	resp, _, err := r.c.Jobs().Scale(r.webID(), "web", &two, "conformance up", false,
		map[string]any{"by": "conformance"}, nil)
	if err != nil {
		return "", fmt.Errorf("scale: %w", err)
	}
	if resp.EvalID == "" {
		return "", errors.New("scale created no evaluation")
	}
	four := 4
	_, _, err = r.c.Jobs().Scale(r.webID(), "web", &four, "over max", false, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "greater than scaling policy maximum") {
		return "", fmt.Errorf("scale past max not refused as Nomad does: %v", err)
	}
	state, err := waitFor("2 healthy allocations", 90*time.Second, func() (bool, string, error) {
		st, _, err := r.c.Jobs().ScaleStatus(r.webID(), nil)
		if err != nil {
			return false, "", err
		}
		g := st.TaskGroups["web"]
		return g.Desired == 2 && g.Healthy == 2, fmt.Sprintf("%+v", g), nil
	})
	if err != nil {
		return state, err
	}
	st, _, err := r.c.Jobs().ScaleStatus(r.webID(), nil)
	if err != nil {
		return "", err
	}
	events := st.TaskGroups["web"].Events
	if len(events) == 0 || events[0].Count == nil || *events[0].Count != 2 || events[0].PreviousCount != 1 ||
		events[0].Message != "conformance up" || events[0].Time == 0 {
		return "", fmt.Errorf("scaling event not recorded as sent: %+v", events)
	}
	if err := r.waitDeploymentDone(); err != nil {
		return "", err
	}
	return "1 -> 2 healthy, event recorded, 4 > max refused", nil
}

// waitDeploymentDone waits until the job's latest deployment is no longer running.
func (r *runner) waitDeploymentDone() error {
	_, err := waitFor("the latest deployment to finish", 90*time.Second, func() (bool, string, error) {
		d, _, err := r.c.Jobs().LatestDeployment(r.webID(), nil)
		if err != nil || d == nil {
			return false, "", err
		}
		return d.Status != "running" && d.Status != "pending", d.Status, nil
	})
	return err
}

func checkVersionsSummary(r *runner) (string, error) {
	versions, _, _, err := r.c.Jobs().Versions(r.webID(), false, nil)
	if err != nil {
		return "", fmt.Errorf("versions: %w", err)
	}
	if len(versions) < 2 || *versions[0].Version <= *versions[len(versions)-1].Version {
		return "", fmt.Errorf("versions not newest first: %d", len(versions))
	}
	_, diffs, _, err := r.c.Jobs().Versions(r.webID(), true, nil)
	if err != nil {
		return "", fmt.Errorf("versions with diffs: %w", err)
	}
	if len(diffs) != len(versions)-1 {
		return "", fmt.Errorf("%d diffs for %d versions", len(diffs), len(versions))
	}
	summary, _, err := r.c.Jobs().Summary(r.webID(), nil)
	if err != nil {
		return "", fmt.Errorf("summary: %w", err)
	}
	if summary.Summary["web"].Running != 2 {
		return "", fmt.Errorf("summary running %d, want 2", summary.Summary["web"].Running)
	}
	stubs, _, err := r.c.Jobs().List(nil)
	if err != nil {
		return "", fmt.Errorf("jobs list: %w", err)
	}
	found := false
	for _, s := range stubs {
		if s.ID == r.webID() {
			found = s.JobSummary != nil && s.SubmitTime > 0
		}
	}
	if !found {
		return "", errors.New("job missing from the list or its stub lacks JobSummary/SubmitTime")
	}
	return fmt.Sprintf("%d versions, %d diffs, 2 running", len(versions), len(diffs)), nil
}

func checkEvaluations(r *runner) (string, error) {
	evals, _, err := r.c.Jobs().Evaluations(r.webID(), nil)
	if err != nil {
		return "", fmt.Errorf("job evaluations: %w", err)
	}
	if len(evals) < 2 {
		return "", fmt.Errorf("%d evaluations, want register + scale", len(evals))
	}
	ev, _, err := r.c.Evaluations().Info(r.state["eval"], nil)
	if err != nil {
		return "", fmt.Errorf("evaluation info: %w", err)
	}
	if ev.Status != "complete" || ev.TriggeredBy != "job-register" || ev.CreateTime == 0 {
		return "", fmt.Errorf("register evaluation %s/%s", ev.Status, ev.TriggeredBy)
	}
	all, _, err := r.c.Evaluations().List(nil)
	if err != nil {
		return "", fmt.Errorf("evaluations list: %w", err)
	}
	allocs, _, err := r.c.Evaluations().Allocations(ev.ID, nil)
	if err != nil {
		return "", fmt.Errorf("evaluation allocations: %w", err)
	}
	return fmt.Sprintf("%d for the job, %d in all, register eval placed %d", len(evals), len(all), len(allocs)), nil
}

func checkNodes(r *runner) (string, error) {
	nodes, _, err := r.c.Nodes().List(nil)
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	if len(nodes) == 0 {
		return "", errors.New("no nodes")
	}
	nodes, _, err = r.c.Nodes().List(&api.QueryOptions{Params: map[string]string{"resources": "true"}})
	if err != nil {
		return "", fmt.Errorf("list with resources: %w", err)
	}
	for _, stub := range nodes {
		if stub.NodeResources == nil {
			return "", fmt.Errorf("node %s: ?resources=true gave no NodeResources", stub.Name)
		}
		if stub.Status != "ready" {
			return "", fmt.Errorf("node %s is %s", stub.Name, stub.Status)
		}
		for name, d := range stub.Drivers {
			if d.Detected && d.UpdateTime.IsZero() {
				return "", fmt.Errorf("node %s driver %s has no UpdateTime", stub.Name, name)
			}
		}
	}
	node, _, err := r.c.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		return "", fmt.Errorf("info: %w", err)
	}
	if node.StatusUpdatedAt == 0 || node.NodeResources == nil || node.HTTPAddr == "" {
		return "", fmt.Errorf("node %s lacks StatusUpdatedAt/NodeResources/HTTPAddr", node.Name)
	}
	if len(node.Events) > 0 && node.Events[0].Timestamp.IsZero() {
		return "", errors.New("node event Timestamp is empty")
	}
	return fmt.Sprintf("%d node(s), %s ready on %s", len(nodes), node.Name, node.HTTPAddr), nil
}

func checkNodePools(r *runner) (string, error) {
	pools, _, err := r.c.NodePools().List(nil)
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	names := []string{}
	for _, p := range pools {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	if !contains(names, "default") || !contains(names, "all") {
		return "", fmt.Errorf("pools %v lack the built-in all/default", names)
	}
	pool, _, err := r.c.NodePools().Info("default", nil)
	if err != nil {
		return "", fmt.Errorf("info: %w", err)
	}
	if pool.Name != "default" {
		return "", fmt.Errorf("info returned %q", pool.Name)
	}
	_, _, err = r.c.NodePools().Info("no-such-pool-"+r.prefix, nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		return "", fmt.Errorf("unknown pool not a 404: %v", err)
	}
	return fmt.Sprintf("pools %v", names), nil
}

func contains(xs []string, want string) bool {
	for _, x := range xs {
		if x == want {
			return true
		}
	}
	return false
}

func checkServices(r *runner) (string, error) {
	name := r.webID() + "-http"
	list, _, err := r.c.Services().List(nil)
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	found := false
	for _, ns := range list {
		for _, s := range ns.Services {
			found = found || s.ServiceName == name
		}
	}
	if !found {
		return "", fmt.Errorf("service %s not listed", name)
	}
	regs, _, err := r.c.Services().Get(name, nil)
	if err != nil {
		return "", fmt.Errorf("get: %w", err)
	}
	if len(regs) != 2 {
		return "", fmt.Errorf("%d registrations, want 2", len(regs))
	}
	for _, reg := range regs {
		if reg.Port <= 0 || reg.Address == "" || reg.AllocID == "" || reg.JobID != r.webID() {
			return "", fmt.Errorf("registration %+v", reg)
		}
	}
	jobRegs, _, err := r.c.Jobs().Services(r.webID(), nil)
	if err != nil {
		return "", fmt.Errorf("job services: %w", err)
	}
	allocRegs, _, err := r.c.Allocations().Services(regs[0].AllocID, nil)
	if err != nil {
		return "", fmt.Errorf("alloc services: %w", err)
	}
	return fmt.Sprintf("%s: %d registrations (job %d, alloc %d)", name, len(regs), len(jobRegs), len(allocRegs)), nil
}

// checkEventStream replays the buffered events from index 0 (Nomad's default) and decodes every
// payload into its typed struct through the client's own helpers.
func checkEventStream(r *runner) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := r.webID()
	topics := map[api.Topic][]string{api.TopicJob: {id}, api.TopicEvaluation: {id}, api.TopicAllocation: {id},
		api.TopicDeployment: {id}, api.TopicNode: {"*"}, api.TopicService: {id + "-http"}}
	stream, err := r.c.EventStream().Stream(ctx, topics, 0, nil)
	if err != nil {
		return "", fmt.Errorf("stream: %w", err)
	}
	seen := map[api.Topic]int{}
	for {
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("not every topic replayed within 30s: %v", seen)
		case evs, ok := <-stream:
			if !ok {
				return "", errors.New("stream closed early")
			}
			if evs.Err != nil {
				return "", fmt.Errorf("stream error: %w", evs.Err)
			}
			if evs.IsHeartbeat() {
				continue
			}
			for _, e := range evs.Events {
				if err := decodeEvent(e, id); err != nil {
					return "", fmt.Errorf("%s/%s event at %d: %w", e.Topic, e.Type, e.Index, err)
				}
				seen[e.Topic]++
			}
			if len(seen) == len(topics) {
				return fmt.Sprintf("replayed from index 0 and decoded: %v", seen), nil
			}
		}
	}
}

func decodeEvent(e api.Event, jobID string) error {
	var err error
	var gotJob string
	switch e.Topic {
	case api.TopicJob:
		var j *api.Job
		if j, err = e.Job(); err == nil && j != nil && j.ID != nil {
			gotJob = *j.ID
		}
	case api.TopicEvaluation:
		var ev *api.Evaluation
		if ev, err = e.Evaluation(); err == nil && ev != nil {
			gotJob = ev.JobID
		}
	case api.TopicAllocation:
		var a *api.Allocation
		if a, err = e.Allocation(); err == nil && a != nil {
			gotJob = a.JobID
		}
	case api.TopicDeployment:
		var d *api.Deployment
		if d, err = e.Deployment(); err == nil && d != nil {
			gotJob = d.JobID
		}
	case api.TopicService:
		var s *api.ServiceRegistration
		if s, err = e.Service(); err == nil && s != nil {
			gotJob = s.JobID
		}
	case api.TopicNode:
		var n *api.Node
		if n, err = e.Node(); err == nil && (n == nil || n.ID == "") {
			err = errors.New("Node payload without ID")
		}
		return err
	default:
		return fmt.Errorf("topic not asked for")
	}
	if err != nil {
		return err
	}
	if gotJob != jobID {
		return fmt.Errorf("payload for job %q", gotJob)
	}
	return nil
}

func checkVariables(r *runner) (string, error) {
	v := api.NewVariable(r.varPath())
	v.Items["model"] = "resnet"
	created, _, err := r.c.Variables().Create(v, nil)
	if err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	if created.CreateTime == 0 || created.ModifyIndex == 0 {
		return "", fmt.Errorf("created variable lacks CreateTime/ModifyIndex: %+v", created)
	}
	stale := *created
	created.Items["model"] = "bert"
	updated, _, err := r.c.Variables().CheckedUpdate(created, nil)
	if err != nil {
		return "", fmt.Errorf("checked update: %w", err)
	}
	stale.Items = api.VariableItems{"model": "stale"}
	_, _, err = r.c.Variables().CheckedUpdate(&stale, nil)
	var conflict api.ErrCASConflict
	if !errors.As(err, &conflict) {
		return "", fmt.Errorf("stale check-and-set not a conflict: %v", err)
	}
	read, _, err := r.c.Variables().Read(r.varPath(), nil)
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	if read.Items["model"] != "bert" || read.ModifyIndex != updated.ModifyIndex {
		return "", fmt.Errorf("read back %+v", read.Items)
	}
	metas, _, err := r.c.Variables().PrefixList("conformance/"+r.prefix, nil)
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	if len(metas) != 1 || metas[0].ModifyTime == 0 {
		return "", fmt.Errorf("prefix list %+v", metas)
	}
	if _, err := r.c.Variables().Delete(r.varPath(), nil); err != nil {
		return "", fmt.Errorf("delete: %w", err)
	}
	if _, _, err := r.c.Variables().Read(r.varPath(), nil); !errors.Is(err, api.ErrVariablePathNotFound) {
		return "", fmt.Errorf("read after delete: %v", err)
	}
	return "create, check-and-set (stale refused), read, list, delete", nil
}

func checkLocks(r *runner) (string, error) {
	v := api.Variable{Path: r.lockPath(), Lock: &api.VariableLock{TTL: "15s", LockDelay: "1s"}}
	holder, err := r.c.Locks(api.WriteOptions{}, v, api.LocksOptionWithMaxRetries(0))
	if err != nil {
		return "", err
	}
	other, err := r.c.Locks(api.WriteOptions{}, v, api.LocksOptionWithMaxRetries(0))
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := holder.Acquire(ctx); err != nil {
		return "", fmt.Errorf("acquire: %w", err)
	}
	if _, err := other.Acquire(ctx); !errors.Is(err, api.ErrLockConflict) {
		return "", fmt.Errorf("second acquire not a lock conflict: %v", err)
	}
	if err := holder.Renew(ctx); err != nil {
		return "", fmt.Errorf("renew: %w", err)
	}
	if err := holder.Release(ctx); err != nil {
		return "", fmt.Errorf("release: %w", err)
	}
	return "acquire, conflicting acquire refused (409), renew, release", nil
}

// checkLogs: a request we send to the task shows up in its stderr through the logs endpoint.
func checkLogs(r *runner) (string, error) {
	alloc, err := r.runningAlloc()
	if err != nil {
		return "", err
	}
	port := alloc.AllocatedResources.Shared.Ports[0]
	marker := "/conformance-logs-" + r.prefix
	resp, err := http.Get(fmt.Sprintf("http://%s:%d%s", hostOr(port.HostIP), port.Value, marker))
	if err != nil {
		return "", fmt.Errorf("request to the task: %w", err)
	}
	resp.Body.Close()
	var text string
	state, err := waitFor("the request line in stderr", 20*time.Second, func() (bool, string, error) {
		text, err = readLogs(r.c, alloc)
		return strings.Contains(text, "GET "+marker), tail(text), err
	})
	if err != nil {
		return state, err
	}
	return fmt.Sprintf("%d bytes of stderr, our request line among them", len(text)), nil
}

// readLogs reads a task's whole stderr without following (the frames end at EOF).
func readLogs(c *api.Client, alloc *api.Allocation) (string, error) {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := c.AllocFS().Logs(alloc, false, "server", "stderr", "start", 0, cancel, nil)
	if frames == nil {
		return "", fmt.Errorf("logs: %w", <-errs)
	}
	var text strings.Builder
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return text.String(), nil
			}
			text.Write(f.Data)
		case err := <-errs:
			if err != nil && !errors.Is(err, io.EOF) {
				return "", fmt.Errorf("logs: %w", err)
			}
		case <-timeout:
			return "", errors.New("logs without follow did not end within 10s")
		}
	}
}

func tail(s string) string {
	if len(s) > 200 {
		return s[len(s)-200:]
	}
	return s
}

func checkScalingPolicies(r *runner) (string, error) {
	stubs, meta, err := r.c.Scaling().ListPolicies(&api.QueryOptions{Params: map[string]string{"job": r.webID()}})
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	if len(stubs) != 1 {
		return "", fmt.Errorf("%d policies for %s, want 1", len(stubs), r.webID())
	}
	stub := stubs[0]
	want := map[string]string{"Namespace": "default", "Job": r.webID(), "Group": "web"}
	for k, v := range want {
		if stub.Target[k] != v {
			return "", fmt.Errorf("target %v, want %v", stub.Target, want)
		}
	}
	if stub.Type != api.ScalingPolicyTypeHorizontal || !stub.Enabled || stub.CreateIndex == 0 {
		return "", fmt.Errorf("stub %+v", stub)
	}
	pol, _, err := r.c.Scaling().GetPolicy(stub.ID, nil)
	if err != nil {
		return "", fmt.Errorf("get: %w", err)
	}
	if pol.Min == nil || *pol.Min != 1 || pol.Max == nil || *pol.Max != 3 || pol.Policy["cooldown"] != "30s" {
		return "", fmt.Errorf("policy %+v", pol)
	}
	// A blocking list query wakes when the policy changes (max 3 -> 2), not before.
	job, err := r.parseWeb(2, "1")
	if err != nil {
		return "", err
	}
	job.TaskGroups[0].Scaling.Max = new(int64(2))
	go func() {
		time.Sleep(500 * time.Millisecond)
		_, _, _ = r.c.Jobs().RegisterOpts(job, &api.RegisterOptions{PreserveCounts: true}, nil)
	}()
	start := time.Now()
	stubs, meta2, err := r.c.Scaling().ListPolicies(&api.QueryOptions{
		WaitIndex: meta.LastIndex, WaitTime: 20 * time.Second, Params: map[string]string{"job": r.webID()}})
	if err != nil {
		return "", fmt.Errorf("blocking list: %w", err)
	}
	waited := time.Since(start)
	if meta2.LastIndex <= meta.LastIndex || waited < 400*time.Millisecond || waited > 10*time.Second {
		return "", fmt.Errorf("blocking list returned after %s with index %d (was %d)", waited, meta2.LastIndex, meta.LastIndex)
	}
	if len(stubs) != 1 || stubs[0].ID != stub.ID || stubs[0].ModifyIndex <= stub.ModifyIndex {
		return "", fmt.Errorf("changed policy %+v (was %+v)", stubs, stub)
	}
	pol, _, err = r.c.Scaling().GetPolicy(stub.ID, nil)
	if err != nil || *pol.Max != 2 {
		return "", fmt.Errorf("get after change: %v %v", err, pol)
	}
	if err := r.waitDeploymentDone(); err != nil {
		return "", err
	}
	return fmt.Sprintf("policy %s found, blocking list woke after %s on max 3 -> 2", stub.ID[:8], waited.Round(time.Millisecond)), nil
}

func checkInfeasibleGPU(r *runner) (string, error) {
	job, err := r.c.Jobs().ParseHCL(gpuJobHCL(r.gpuID(), 64), true)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	plan, _, err := r.c.Jobs().Plan(job, false, nil)
	if err != nil {
		return "", fmt.Errorf("plan: %w", err)
	}
	failed := plan.FailedTGAllocs["infer"]
	if failed == nil {
		return "", fmt.Errorf("64 GPUs placed? FailedTGAllocs %v", plan.FailedTGAllocs)
	}
	sum := 0
	for _, n := range failed.ConstraintFiltered {
		sum += n
	}
	for _, n := range failed.DimensionExhausted {
		sum += n
	}
	if failed.NodesEvaluated == 0 {
		return "", errors.New("no nodes evaluated")
	}
	if failed.NodesFiltered+failed.NodesExhausted != failed.NodesEvaluated || sum != failed.NodesEvaluated {
		return "", fmt.Errorf("nodes counted more than once: evaluated %d, filtered %d, exhausted %d, reasons %v %v",
			failed.NodesEvaluated, failed.NodesFiltered, failed.NodesExhausted, failed.ConstraintFiltered, failed.DimensionExhausted)
	}
	return fmt.Sprintf("not placed: %d node(s) evaluated, reasons %v %v", failed.NodesEvaluated,
		failed.ConstraintFiltered, failed.DimensionExhausted), nil
}

func checkDeregisterPurge(r *runner) (string, error) {
	evalID, _, err := r.c.Jobs().Deregister(r.webID(), false, nil)
	if err != nil {
		return "", fmt.Errorf("stop: %w", err)
	}
	if evalID == "" {
		return "", errors.New("stop created no evaluation")
	}
	job, _, err := r.c.Jobs().Info(r.webID(), nil)
	if err != nil || job.Stop == nil || !*job.Stop {
		return "", fmt.Errorf("stopped job not marked Stop: %v", err)
	}
	stubs, _, err := r.c.Scaling().ListPolicies(&api.QueryOptions{Params: map[string]string{"job": r.webID()}})
	if err != nil || len(stubs) != 1 || stubs[0].Enabled {
		return "", fmt.Errorf("stopped job's policy not listed disabled: %v %+v", err, stubs)
	}
	_, err = waitFor("every allocation to stop", 60*time.Second, func() (bool, string, error) {
		allocs, _, err := r.c.Jobs().Allocations(r.webID(), false, nil)
		if err != nil {
			return false, "", err
		}
		live := 0
		for _, a := range allocs {
			if a.ClientStatus == "running" || a.ClientStatus == "pending" {
				live++
			}
		}
		return live == 0, fmt.Sprintf("%d live", live), nil
	})
	if err != nil {
		return "", err
	}
	if _, _, err := r.c.Jobs().Deregister(r.webID(), true, nil); err != nil {
		return "", fmt.Errorf("purge: %w", err)
	}
	_, _, err = r.c.Jobs().Info(r.webID(), nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		return "", fmt.Errorf("purged job still readable: %v", err)
	}
	stubs, _, err = r.c.Scaling().ListPolicies(&api.QueryOptions{Params: map[string]string{"job": r.webID()}})
	if err != nil || len(stubs) != 0 {
		return "", fmt.Errorf("purged job's policy still listed: %v %d", err, len(stubs))
	}
	return "stopped (policy disabled, allocs stopped), purged (404, policy gone)", nil
}

// checkACLSelf: with ACLs on, the token's own record decodes; with them off, Nomad's 400.
func checkACLSelf(r *runner) (string, error) {
	self, err := r.c.Agent().Self()
	if err != nil {
		return "", err
	}
	acl, _ := self.Config["ACL"].(map[string]any)
	enabled, _ := acl["Enabled"].(bool)
	tok, _, err := r.c.ACLTokens().Self(nil)
	if enabled {
		if err != nil {
			return "", fmt.Errorf("ACLs enabled but token self failed: %w", err)
		}
		if tok.AccessorID == "" || tok.CreateTime.IsZero() {
			return "", fmt.Errorf("token %+v", tok)
		}
		return fmt.Sprintf("ACLs on: token %q (%s)", tok.Name, tok.Type), nil
	}
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "ACL support disabled") {
		return "", fmt.Errorf("ACLs off: token self answered %v, want 400 ACL support disabled", err)
	}
	return "ACLs off: 400 ACL support disabled", nil
}

// checkJobBlocking: a blocking read with nothing changing waits out its wait time and returns
// the same index, with X-Nomad-KnownLeader set.
func checkJobBlocking(r *runner) (string, error) {
	_, meta, err := r.c.Jobs().Info(r.webID(), nil)
	if err != nil {
		return "", err
	}
	start := time.Now()
	job, meta2, err := r.c.Jobs().Info(r.webID(), &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 400 * time.Millisecond})
	if err != nil {
		return "", err
	}
	waited := time.Since(start)
	if waited < 350*time.Millisecond || waited > 5*time.Second {
		return "", fmt.Errorf("blocking read returned after %s (wait 400ms)", waited)
	}
	if meta2.LastIndex != meta.LastIndex || *job.ModifyIndex != meta.LastIndex || !meta2.KnownLeader {
		return "", fmt.Errorf("index %d -> %d (job ModifyIndex %d), known leader %v", meta.LastIndex,
			meta2.LastIndex, *job.ModifyIndex, meta2.KnownLeader)
	}
	_, _, err = r.c.Jobs().Info("no-such-job-"+r.prefix, nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		return "", fmt.Errorf("unknown job not a 404: %v", err)
	}
	return fmt.Sprintf("waited %s at index %d; unknown job 404", waited.Round(time.Millisecond), meta.LastIndex), nil
}

// checkAllocStop: stopping one allocation gets a follow-up evaluation and a replacement.
func checkAllocStop(r *runner) (string, error) {
	alloc, err := r.runningAlloc()
	if err != nil {
		return "", err
	}
	resp, err := r.c.Allocations().Stop(alloc, nil)
	if err != nil {
		return "", fmt.Errorf("stop: %w", err)
	}
	if resp.EvalID == "" {
		return "", errors.New("stop gave no evaluation")
	}
	state, err := waitFor("the replacement to run", 60*time.Second, func() (bool, string, error) {
		stubs, _, err := r.c.Jobs().Allocations(r.webID(), false, nil)
		if err != nil {
			return false, "", err
		}
		running, stopped := 0, false
		for _, s := range stubs {
			if s.ID == alloc.ID {
				stopped = s.DesiredStatus == "stop" && s.ClientStatus == "complete"
			} else if s.ClientStatus == "running" && s.DesiredStatus == "run" {
				running++
			}
		}
		return stopped && running == 2, fmt.Sprintf("stopped %v, %d others running", stopped, running), nil
	})
	if err != nil {
		return state, err
	}
	return fmt.Sprintf("alloc %s stopped, eval %s, replacement running", alloc.ID[:8], resp.EvalID[:8]), nil
}

// checkRevert: reverting to an earlier version registers it as a new version and deploys it.
func checkRevert(r *runner) (string, error) {
	job, _, err := r.c.Jobs().Info(r.webID(), nil)
	if err != nil {
		return "", err
	}
	current := *job.Version
	prior := current
	resp, _, err := r.c.Jobs().Revert(r.webID(), 1, &prior, nil, "", "")
	if err != nil {
		return "", fmt.Errorf("revert: %w", err)
	}
	stale := current + 100
	if _, _, err := r.c.Jobs().Revert(r.webID(), 1, &stale, nil, "", ""); err == nil {
		return "", errors.New("revert with a wrong EnforcePriorVersion was accepted")
	}
	job, _, err = r.c.Jobs().Info(r.webID(), nil)
	if err != nil {
		return "", err
	}
	if *job.Version != current+1 || *job.TaskGroups[0].Scaling.Max != 3 {
		return "", fmt.Errorf("after revert: version %d (want %d), scaling max %d", *job.Version, current+1,
			*job.TaskGroups[0].Scaling.Max)
	}
	if err := r.waitDeploymentDone(); err != nil {
		return "", err
	}
	d, _, err := r.c.Jobs().LatestDeployment(r.webID(), nil)
	if err != nil || d.JobVersion != current+1 || d.Status != "successful" {
		return "", fmt.Errorf("revert deployment %v: %+v", err, d)
	}
	return fmt.Sprintf("version 1 re-registered as %d (eval %s), deployed", current+1, resp.EvalID[:8]), nil
}

// checkFailedTask: a batch task that exits 1 fails, is rescheduled once (its replacement
// carries a RescheduleTracker naming the first), fails again and stays failed; the task state
// (FinishedAt, the Terminated event's exit code) and the tracker decode.
func checkFailedTask(r *runner) (string, error) {
	job, err := r.c.Jobs().ParseHCL(failingJobHCL(r.failID()), true)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	if _, _, err := r.c.Jobs().Register(job, nil); err != nil {
		return "", fmt.Errorf("register: %w", err)
	}
	var stubs []*api.AllocationListStub
	state, err := waitFor("two failed allocations (the first rescheduled once)", 60*time.Second, func() (bool, string, error) {
		stubs, _, err = r.c.Jobs().Allocations(r.failID(), false, nil)
		if err != nil {
			return false, "", err
		}
		failed := 0
		for _, s := range stubs {
			if s.ClientStatus == "failed" {
				failed++
			}
		}
		return failed == 2 && len(stubs) == 2, fmt.Sprintf("%d allocs, %d failed", len(stubs), failed), nil
	})
	if err != nil {
		return state, err
	}
	var first, second *api.Allocation
	for _, s := range stubs {
		alloc, _, err := r.c.Allocations().Info(s.ID, nil)
		if err != nil {
			return "", err
		}
		if alloc.PreviousAllocation == "" {
			first = alloc
		} else {
			second = alloc
		}
	}
	if first == nil || second == nil || second.PreviousAllocation != first.ID || first.NextAllocation != second.ID {
		return "", errors.New("allocations are not linked by PreviousAllocation/NextAllocation")
	}
	tracker := second.RescheduleTracker
	if tracker == nil || len(tracker.Events) != 1 || tracker.Events[0].PrevAllocID != first.ID ||
		tracker.Events[0].RescheduleTime < first.CreateTime {
		return "", fmt.Errorf("reschedule tracker %+v", tracker)
	}
	ts := second.TaskStates["fail"]
	if ts == nil || !ts.Failed || ts.State != "dead" || ts.FinishedAt.IsZero() || ts.FinishedAt.Before(ts.StartedAt) {
		return "", fmt.Errorf("task state %+v", ts)
	}
	exit := -1
	for _, e := range ts.Events {
		if e.Type == "Terminated" {
			exit = e.ExitCode
		}
	}
	if exit != 1 {
		return "", fmt.Errorf("no Terminated event with exit code 1: %+v", ts.Events)
	}
	summary, _, err := r.c.Jobs().Summary(r.failID(), nil)
	if err != nil || summary.Summary["main"].Failed != 2 {
		return "", fmt.Errorf("summary %v %+v", err, summary)
	}
	return fmt.Sprintf("alloc %s failed, rescheduled once as %s, failed again (exit 1)", first.ID[:8], second.ID[:8]), nil
}

// checkCanaryPromote: a new version with canary = 1 places one canary, waits for promotion,
// and finishes after Deployments().PromoteAll, as `nomad deployment promote` drives it.
func checkCanaryPromote(r *runner) (string, error) {
	job, _, err := r.c.Jobs().Info(r.webID(), nil)
	if err != nil {
		return "", err
	}
	job.TaskGroups[0].Update.Canary = new(1)
	job.Meta = map[string]string{"rev": "canary"}
	reg, _, err := r.c.Jobs().RegisterOpts(job, &api.RegisterOptions{PreserveCounts: true}, nil)
	if err != nil {
		return "", fmt.Errorf("register: %w", err)
	}
	var dep *api.Deployment
	state, err := waitFor("a healthy canary awaiting promotion", 60*time.Second, func() (bool, string, error) {
		d, _, err := r.c.Jobs().LatestDeployment(r.webID(), nil)
		if err != nil || d == nil {
			return false, "no deployment", err
		}
		dep = d
		tg := d.TaskGroups["web"]
		if d.Status == "failed" {
			return false, d.Status, fmt.Errorf("canary deployment failed: %s", d.StatusDescription)
		}
		return tg != nil && tg.DesiredCanaries == 1 && len(tg.PlacedCanaries) == 1 && tg.HealthyAllocs == 1 &&
			!tg.Promoted && d.Status == "running", fmt.Sprintf("%s %+v", d.Status, tg), nil
	})
	if err != nil {
		return state, err
	}
	if dep.JobModifyIndex == 0 || dep.JobVersion != uint64(*job.Version)+1 {
		return "", fmt.Errorf("deployment tracks version %d (job modify %d), want %d", dep.JobVersion,
			dep.JobModifyIndex, *job.Version+1)
	}
	canary, _, err := r.c.Allocations().Info(dep.TaskGroups["web"].PlacedCanaries[0], nil)
	if err != nil {
		return "", err
	}
	if canary.DeploymentStatus == nil || !canary.DeploymentStatus.Canary {
		return "", fmt.Errorf("canary alloc not marked Canary: %+v", canary.DeploymentStatus)
	}
	if _, _, err := r.c.Deployments().PromoteAll(dep.ID, nil); err != nil {
		return "", fmt.Errorf("promote: %w", err)
	}
	state, err = waitFor("the promoted deployment to succeed", 60*time.Second, func() (bool, string, error) {
		d, _, err := r.c.Deployments().Info(dep.ID, nil)
		if err != nil {
			return false, "", err
		}
		return d.Status == "successful" && d.TaskGroups["web"].Promoted, d.Status, nil
	})
	if err != nil {
		return state, err
	}
	return fmt.Sprintf("canary %s healthy, promoted, deployment successful (eval %s)", canary.ID[:8], reg.EvalID[:8]), nil
}
