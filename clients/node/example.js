'use strict';
// Calls a running stack: one HTTP call through api_service, one query through db_service.
//   node example.js [api-address] [db-address] [url]
const { api, db, grpc } = require('./index.js');

const [apiAddress = '127.0.0.1:50051', dbAddress = '127.0.0.1:50052', url = 'http://127.0.0.1:9464/metrics'] =
  process.argv.slice(2);
const deadline = () => ({ deadline: Date.now() + 10_000 });

const apiClient = new api.ApiService(apiAddress, grpc.credentials.createInsecure());
apiClient.Call({ url }, deadline(), (err, reply) => {
  if (err) throw err;
  console.log(`HTTP ${reply.status_code}, ${reply.body.length} bytes`);
  apiClient.close();
  const dbClient = new db.DbService(dbAddress, grpc.credentials.createInsecure());
  dbClient.Query({ sql: 'SELECT count(*) FROM external_api_logs', read_only: true }, deadline(), (qErr, rows) => {
    if (qErr) throw qErr;
    console.log(`calls recorded: ${rows.rows[0].values[0].int64_value}`);
    dbClient.close();
  });
});
