<?php
/*
 * The one SP the test IdP trusts (the gateway), described by testbed.json's "sp" object, which
 * tests/testbed.py writes per run from the Idp constructor's arguments.
 */
$tb = json_decode(file_get_contents(dirname(__DIR__) . '/testbed.json'), true);
$sp = $tb['sp'];

$entry = [
    'AssertionConsumerService' => [[
        'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
        'Location' => $sp['acs_url'],
        'index' => 0,
    ]],
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified',
    'simplesaml.nameidattribute' => 'uid',
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
    'saml20.sign.response' => true,
    'saml20.sign.assertion' => true,
    'validate.authnrequest' => (bool) $sp['validate_authnrequest'],
    // Single Logout: the IdP signs the LogoutRequests and LogoutResponses it sends to the SP
    // and, when it has the SP's certificate, requires the SP's to be signed.
    'sign.logout' => true,
    'validate.logout' => !empty($sp['cert_data']),
];
if (!empty($sp['slo_url'])) {
    $entry['SingleLogoutService'] = [
        ['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => $sp['slo_url']],
        ['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', 'Location' => $sp['slo_url']],
    ];
}
if (!empty($sp['cert_data'])) {
    // The SP's certificate: for AuthnRequest signatures (validate.authnrequest) and, with
    // encrypt_assertions, for encrypting assertions (SimpleSAMLphp 1.19 then uses RSA-OAEP key
    // transport and AES-128-CBC content encryption), unless encryption_cert_data names another.
    $separate = !empty($sp['encryption_cert_data']);
    $entry['keys'] = [[
        'type' => 'X509Certificate', 'signing' => true,
        'encryption' => !$separate && (bool) ($sp['encrypt_assertions'] ?? false),
        'X509Certificate' => $sp['cert_data'],
    ]];
    if ($separate) {
        $entry['keys'][] = [
            'type' => 'X509Certificate', 'signing' => false, 'encryption' => true,
            'X509Certificate' => $sp['encryption_cert_data'],
        ];
    }
}
$entry['assertion.encryption'] = (bool) ($sp['encrypt_assertions'] ?? false);
$metadata[$sp['entity_id']] = $entry;
