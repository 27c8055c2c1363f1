package main

import "fmt"

// webJobHCL is a tiny raw_exec service: Python's http.server on a dynamic port, checked by a
// Nomad-native http check, with an update block (so registering it makes a deployment) and a
// scaling block (so it has a scaling policy). No Triton: this program checks the API, not models.
func webJobHCL(id, python, dir string, count int, rev string) string {
	return fmt.Sprintf(`
job %q {
  datacenters = ["*"]
  type        = "service"
  meta {
    rev = %q
  }
  group "web" {
    count = %d
    network {
      port "http" {}
    }
    scaling {
      min = 1
      max = 3
      policy {
        cooldown = "30s"
      }
    }
    update {
      max_parallel      = 1
      min_healthy_time  = "1s"
      healthy_deadline  = "60s"
      progress_deadline = "120s"
      auto_revert       = false
    }
    service {
      name     = "%s-http"
      port     = "http"
      provider = "nomad"
      check {
        type     = "http"
        path     = "/"
        interval = "1s"
        timeout  = "2s"
      }
    }
    task "server" {
      driver = "raw_exec"
      config {
        command = %q
        args    = ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1", "--directory", %q]
      }
      resources {
        cpu    = 50
        memory = 64
      }
    }
  }
}
`, id, rev, count, id, python, dir)
}

// gpuJobHCL asks for more GPUs than any node has: the plan must fail placement with every
// filtered node counted once.
func gpuJobHCL(id string, gpus int) string {
	return fmt.Sprintf(`
job %q {
  datacenters = ["*"]
  group "infer" {
    count = 1
    task "triton" {
      driver = "raw_exec"
      config {
        command = "/bin/true"
      }
      resources {
        cpu    = 100
        memory = 64
        device "nvidia/gpu" {
          count = %d
        }
      }
    }
  }
}
`, id, gpus)
}

// failingJobHCL: a batch task that exits 1, never restarted in place and rescheduled once.
func failingJobHCL(id string) string {
	return fmt.Sprintf(`
job %q {
  datacenters = ["*"]
  type        = "batch"
  group "main" {
    count = 1
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts       = 1
      interval       = "1h"
      delay          = "1s"
      delay_function = "constant"
      unlimited      = false
    }
    task "fail" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo failing on purpose >&2; exit 1"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`, id)
}
