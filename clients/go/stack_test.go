package paca_test

// These tests call a running stack; the Python e2e suite starts one and runs them with
// PACA_API_ADDRESS, PACA_DB_ADDRESS and PACA_UPSTREAM_URL set. Without them they skip.

import (
	"context"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	apiv1 "github.com/paca-integrations/paca/clients/go/gen/paca/api/v1"
	dbv1 "github.com/paca-integrations/paca/clients/go/gen/paca/db/v1"
)

func dial(t *testing.T, env string) *grpc.ClientConn {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		t.Skipf("%s is not set: run through the e2e suite (make test)", env)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCallRelaysTheUpstreamResponse(t *testing.T) {
	conn := dial(t, "PACA_API_ADDRESS")
	reply, err := apiv1.NewApiServiceClient(conn).Call(timeout(t), &apiv1.CallRequest{
		Target:   &apiv1.CallRequest_Url{Url: os.Getenv("PACA_UPSTREAM_URL") + "/echo?from=go"},
		Provider: "go-client",
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.GetStatusCode() != 200 {
		t.Fatalf("status %d", reply.GetStatusCode())
	}
	if len(reply.GetBody()) == 0 {
		t.Fatal("empty body")
	}
}

func TestBadInputIsInvalidArgument(t *testing.T) {
	conn := dial(t, "PACA_API_ADDRESS")
	_, err := apiv1.NewApiServiceClient(conn).Call(timeout(t), &apiv1.CallRequest{
		Target: &apiv1.CallRequest_Url{Url: "ftp://example.com/"},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
}

func TestQueryReturnsTypedRows(t *testing.T) {
	conn := dial(t, "PACA_DB_ADDRESS")
	reply, err := dbv1.NewDbServiceClient(conn).Query(timeout(t), &dbv1.QueryRequest{
		Sql:    "SELECT ? + 1 AS answer",
		Params: []*dbv1.Value{{Kind: &dbv1.Value_Int64Value{Int64Value: 41}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.GetRows()[0].GetValues()[0].GetInt64Value(); got != 42 {
		t.Fatalf("want 42, got %d", got)
	}
}

func TestEveryServiceIsServing(t *testing.T) {
	for _, env := range []string{"PACA_API_ADDRESS", "PACA_DB_ADDRESS"} {
		conn := dial(t, env)
		reply, err := healthpb.NewHealthClient(conn).Check(timeout(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if reply.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: %v", env, reply.GetStatus())
		}
	}
}
