package deploycheck

import (
	"fmt"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// Each replica of a service needs its own INSTANCE_ID, the consumers' group
// instance id (docs/takeover.md): two members with one id fence each other.
// Unset, it is the host name, which compose makes the container id: one per
// replica, kept across restarts of that container. So a service may pin
// INSTANCE_ID (or hostname) only while it runs one replica, and two
// services of one binary (one consumer group) may not pin the same.

func checkInstanceIDs(t *testing.T, _ string, p *types.Project) {
	for _, problem := range instanceIDProblems(p) {
		t.Error(problem)
	}
}

func instanceIDProblems(p *types.Project) []string {
	var problems []string
	seen := map[string]string{} // binary + "/" + id → service
	for _, s := range sortedServices(p) {
		id := pinnedInstanceID(s)
		if id == "" || s.Build == nil {
			continue
		}
		if n := s.GetScale(); n > 1 {
			problems = append(problems, fmt.Sprintf("%s: %d replicas would share INSTANCE_ID %q and fence each other; leave INSTANCE_ID and hostname unset (each container's id is its own)", s.Name, n, id))
		}
		binary := ""
		if svc := s.Build.Args["SERVICE"]; svc != nil {
			binary = *svc
		}
		if other, dup := seen[binary+"/"+id]; dup {
			problems = append(problems, fmt.Sprintf("%s and %s both run %s as INSTANCE_ID %q: they would fence each other in its consumer group", other, s.Name, binary, id))
		}
		seen[binary+"/"+id] = s.Name
	}
	return problems
}

// pinnedInstanceID is the service's INSTANCE_ID, or else its hostname, or ""
// when compose picks the container id.
func pinnedInstanceID(s types.ServiceConfig) string {
	if v, ok := s.Environment["INSTANCE_ID"]; ok && v != nil && *v != "" {
		return *v
	}
	return s.Hostname
}

// The check finds both ways to give two consumers one id.
func TestInstanceIDProblems(t *testing.T) {
	str := func(s string) *string { return &s }
	two := 2
	svc := func(name, binary string, env types.MappingWithEquals, hostname string, replicas *int) types.ServiceConfig {
		s := types.ServiceConfig{Name: name, Scale: replicas}
		s.Environment, s.Hostname = env, hostname
		s.Build = &types.BuildConfig{Args: types.MappingWithEquals{"SERVICE": str(binary)}}
		return s
	}
	tests := []struct {
		name     string
		services []types.ServiceConfig
		want     string
	}{
		{"container ids", []types.ServiceConfig{svc("ai", "ai-consumer", nil, "", &two)}, ""},
		{"one pinned replica", []types.ServiceConfig{svc("ai", "ai-consumer", types.MappingWithEquals{"INSTANCE_ID": str("ai-1")}, "", nil)}, ""},
		{"pinned and scaled", []types.ServiceConfig{svc("ai", "ai-consumer", types.MappingWithEquals{"INSTANCE_ID": str("ai-1")}, "", &two)}, "2 replicas would share"},
		{"hostname and scaled", []types.ServiceConfig{svc("ai", "ai-consumer", nil, "ai", &two)}, "2 replicas would share"},
		{"two services, one id", []types.ServiceConfig{
			svc("ai-a", "ai-consumer", types.MappingWithEquals{"INSTANCE_ID": str("x")}, "", nil),
			svc("ai-b", "ai-consumer", nil, "x", nil),
		}, "both run ai-consumer"},
		{"one id, two groups", []types.ServiceConfig{
			svc("ai", "ai-consumer", types.MappingWithEquals{"INSTANCE_ID": str("x")}, "", nil),
			svc("relay", "message-relay", types.MappingWithEquals{"INSTANCE_ID": str("x")}, "", nil),
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &types.Project{Services: types.Services{}}
			for _, s := range tc.services {
				p.Services[s.Name] = s
			}
			got := strings.Join(instanceIDProblems(p), "\n")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("problems %q, want one containing %q", got, tc.want)
			}
		})
	}
}
