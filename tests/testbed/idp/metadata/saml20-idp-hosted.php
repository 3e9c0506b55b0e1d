<?php
/*
 * The test IdP itself. Option names as read by modules/saml/lib/IdP/SAML2.php and
 * modules/saml/lib/Message.php in SimpleSAMLphp 1.19.
 */
$tb = json_decode(file_get_contents(dirname(__DIR__) . '/testbed.json'), true);

$metadata[$tb['entity_id']] = [
    'host' => '__DEFAULT__',
    'auth' => 'example-userpass',
    'privatekey' => $tb['work_dir'] . '/idp.key',
    'certificate' => $tb['work_dir'] . '/idp.crt',

    'saml20.sign.response' => true,
    'saml20.sign.assertion' => true,
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',

    // NameID: the user's uid as an unspecified-format NameID.
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified',
    'simplesaml.nameidattribute' => 'uid',

    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
    'assertion.lifetime' => 300,
];
