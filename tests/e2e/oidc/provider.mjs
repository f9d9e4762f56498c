// A real OpenID Provider for the tests: the certified `oidc-provider` from npm, configured the way
// a firm would configure Keycloak or Okta for Accrue (tests/e2e/test_oidc_provider.py starts it).
//
//   node provider.mjs <config.json>
//
// config.json: {"issuer": "http://127.0.0.1:<port>", "port": <port>, "jwks": {"keys": [...]},
//               "clients": [...], "accounts": {"<sub>": {"roles": [...], "legal_entities": [...]}},
//               "client_roles": {"<client_id>": {"roles": [...], "legal_entities": [...]}}}
//
// The first key of jwks signs; every key is published, so rotating is: restart with the new key
// first and the old one after it. Access tokens are JWTs (RFC 9068) for the resource
// "urn:accrue" with audience "accrue", carrying the roles and legal entities Accrue reads.
// User tokens: the authorization-code flow, with an interaction that logs in `login_hint` and
// grants what was asked at once (no login page: it is driven headlessly by httpx).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const RESOURCE = 'urn:accrue';

const provider = new Provider(config.issuer, {
  jwks: config.jwks,
  clients: config.clients,
  // Every key is EC P-256 (as Accrue's own): ID tokens are ES256 too, not the RS256 default.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  cookies: { keys: ['accrue-test-cookie-key'] },
  findAccount: async (ctx, sub) => (config.accounts[sub] ? { accountId: sub, claims: async () => ({ sub }) } : undefined),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== RESOURCE) throw new Error(`unknown resource ${resource}`);
        return {
          scope: 'api',
          audience: 'accrue',
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  pkce: { required: () => true },
  ttl: {
    AccessToken: 600,
    ClientCredentials: 600,
    IdToken: 600,
    Interaction: 600,
    Grant: 600,
    Session: 600,
  },
  extraTokenClaims: async (ctx, token) => {
    const who = token.accountId ? config.accounts[token.accountId] : config.client_roles[token.clientId];
    if (!who) return undefined;
    return { roles: who.roles, accrue_legal_entities: who.legal_entities };
  },
});

// The interaction: log in whoever login_hint names, and grant the scopes and resource asked for.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) return next();
  const { params } = await provider.interactionDetails(ctx.req, ctx.res);
  const accountId = params.login_hint;
  if (!config.accounts[accountId]) {
    ctx.status = 403;
    ctx.body = `no account ${accountId}`;
    return undefined;
  }
  const grant = new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope('openid');
  grant.addResourceScope(RESOURCE, 'api');
  const grantId = await grant.save();
  const to = await provider.interactionResult(ctx.req, ctx.res, {
    login: { accountId },
    consent: { grantId },
  });
  ctx.status = 303;
  ctx.redirect(to);
  return undefined;
});

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider ready at ${config.issuer} signing with ${config.jwks.keys[0].kid}`);
});
