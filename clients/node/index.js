'use strict';
// Stubs for the PACA services, built at load time from the .proto files shipped in proto/
// (a copy of the repository's protos/, refreshed by `make protos`).
//
//   const { api, db, monitor, health, grpc } = require('@paca-integrations/client');
//   const client = new api.ApiService('127.0.0.1:50051', grpc.credentials.createInsecure());

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.join(__dirname, 'proto');

// longs as strings keep int64 exact; enums as names read better than numbers.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

function load(file) {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, LOADER_OPTIONS));
}

const paca = load([
  'paca/api/v1/api_service.proto',
  'paca/db/v1/db_service.proto',
  'paca/monitor/v1/monitor_service.proto',
]).paca;

// grpc.health.v1, defined inline so the package needs no other .proto source.
const healthDefinition = protoLoader.fromJSON(
  {
    nested: {
      grpc: {
        nested: {
          health: {
            nested: {
              v1: {
                nested: {
                  HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
                  HealthCheckResponse: {
                    fields: { status: { type: 'ServingStatus', id: 1 } },
                    nested: {
                      ServingStatus: {
                        values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 },
                      },
                    },
                  },
                  Health: {
                    methods: {
                      Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
  LOADER_OPTIONS,
);
const health = grpc.loadPackageDefinition(healthDefinition).grpc.health.v1;

module.exports = {
  grpc,
  api: paca.api.v1,
  db: paca.db.v1,
  monitor: paca.monitor.v1,
  health,
};
