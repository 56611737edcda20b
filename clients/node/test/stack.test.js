'use strict';
// Calls a running stack. The Python e2e suite starts one and runs these with PACA_API_ADDRESS,
// PACA_DB_ADDRESS and PACA_UPSTREAM_URL set; without them the tests skip.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { promisify } = require('node:util');
const { api, db, health, grpc } = require('../index.js');

const { PACA_API_ADDRESS, PACA_DB_ADDRESS, PACA_UPSTREAM_URL } = process.env;
const skip = !PACA_API_ADDRESS && 'PACA_API_ADDRESS is not set: run through the e2e suite';
const options = () => ({ deadline: Date.now() + 10_000 });

function call(client, method, request) {
  return promisify(client[method].bind(client))(request, options());
}

test('Call relays the upstream response', { skip, timeout: 20_000 }, async () => {
  const client = new api.ApiService(PACA_API_ADDRESS, grpc.credentials.createInsecure());
  try {
    const reply = await call(client, 'Call', { url: `${PACA_UPSTREAM_URL}/echo?from=node`, provider: 'node-client' });
    assert.equal(reply.status_code, 200);
    assert.equal(JSON.parse(reply.body.toString()).query[0][1], 'node');
  } finally {
    client.close();
  }
});

test('bad input is INVALID_ARGUMENT', { skip, timeout: 20_000 }, async () => {
  const client = new api.ApiService(PACA_API_ADDRESS, grpc.credentials.createInsecure());
  try {
    await assert.rejects(call(client, 'Call', { url: 'ftp://example.com/' }), (err) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      return true;
    });
  } finally {
    client.close();
  }
});

test('Query returns typed rows with exact int64', { skip, timeout: 20_000 }, async () => {
  const client = new db.DbService(PACA_DB_ADDRESS, grpc.credentials.createInsecure());
  try {
    const reply = await call(client, 'Query', {
      sql: 'SELECT ? + 1 AS answer',
      params: [{ int64_value: '9007199254740992' }],
    });
    assert.equal(reply.rows[0].values[0].int64_value, '9007199254740993');
  } finally {
    client.close();
  }
});

test('every service is SERVING', { skip, timeout: 20_000 }, async () => {
  for (const address of [PACA_API_ADDRESS, PACA_DB_ADDRESS]) {
    const client = new health.Health(address, grpc.credentials.createInsecure());
    try {
      const reply = await call(client, 'Check', { service: '' });
      assert.equal(reply.status, 'SERVING');
    } finally {
      client.close();
    }
  }
});
