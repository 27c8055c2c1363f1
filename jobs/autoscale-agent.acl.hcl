# Least-privilege ACL policy for `nomad-triton autoscale agent` (one namespace; repeat the block
# for each namespace the agent serves). What each capability is for:
#   list-scaling-policies, read-scaling-policy  discover targets (/v1/scaling/policies, /policy/:id)
#   list-jobs           follow the jobs (/v1/jobs blocking query: re-read a group's count on change)
#   read-job            allocations to probe (/v1/allocations), the latest deployment (no
#                       scaling while one runs)
#   read-job-scaling    the group's desired count and scaling events (GET /v1/job/:id/scale)
#   scale-job           scale, and record each decision as a scaling event (POST /v1/job/:id/scale)
#   variables write     the HA lock (PUT /v1/var/<path>?lock-acquire|renew|release)
# Nothing else: it cannot submit, stop or read the logs of jobs, nor read other variables.
namespace "default" {
  capabilities = [
    "list-scaling-policies",
    "read-scaling-policy",
    "list-jobs",
    "read-job",
    "read-job-scaling",
    "scale-job",
  ]

  variables {
    path "nomad-triton/autoscaler/*" {
      capabilities = ["read", "write"]
    }
  }
}
