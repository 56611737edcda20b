// Command example calls a running PACA stack from Go: one HTTP call through api_service and one
// query through db_service.
//
//	go run ./example -api 127.0.0.1:50051 -db 127.0.0.1:50052 -url https://example.com/
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/paca-integrations/paca/clients/go/gen/paca/api/v1"
	dbv1 "github.com/paca-integrations/paca/clients/go/gen/paca/db/v1"
)

func main() {
	apiAddr := flag.String("api", "127.0.0.1:50051", "api_service address")
	dbAddr := flag.String("db", "127.0.0.1:50052", "db_service address")
	url := flag.String("url", "http://127.0.0.1:9464/metrics", "URL to call through api_service")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	apiConn, err := grpc.NewClient(*apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer apiConn.Close()
	reply, err := apiv1.NewApiServiceClient(apiConn).Call(ctx, &apiv1.CallRequest{
		Target: &apiv1.CallRequest_Url{Url: *url},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("HTTP %d, %d bytes, %s\n", reply.GetStatusCode(), len(reply.GetBody()), reply.GetLatency().AsDuration())

	dbConn, err := grpc.NewClient(*dbAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer dbConn.Close()
	rows, err := dbv1.NewDbServiceClient(dbConn).Query(ctx, &dbv1.QueryRequest{
		Sql:      "SELECT count(*) FROM external_api_logs",
		ReadOnly: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("calls recorded: %d\n", rows.GetRows()[0].GetValues()[0].GetInt64Value())
}
