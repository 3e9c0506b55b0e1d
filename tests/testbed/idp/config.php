<?php
/*
 * SimpleSAMLphp 1.19 configuration for the test IdP. tests/testbed.py copies this folder into a
 * per-run config dir and writes testbed.json beside it with the run's URL, paths and SP.
 */
$tb = json_decode(file_get_contents(__DIR__ . '/testbed.json'), true);

$config = [
    'baseurlpath' => $tb['base_url'],          // absolute URL: php -S serves www/ at /
    'certdir' => $tb['work_dir'],
    'loggingdir' => $tb['work_dir'] . '/',
    'datadir' => $tb['work_dir'] . '/data/',
    'tempdir' => $tb['work_dir'] . '/tmp',
    'metadatadir' => __DIR__ . '/metadata/',
    'metadata.sources' => [['type' => 'flatfile', 'directory' => __DIR__ . '/metadata/']],

    'secretsalt' => $tb['secret_salt'],
    'auth.adminpassword' => $tb['secret_salt'],
    'technicalcontact_name' => 'Test bed',
    'technicalcontact_email' => 'na@example.org',
    'timezone' => 'UTC',

    'enable.saml20-idp' => true,
    'enable.shib13-idp' => false,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true],
    'authproc.idp' => [],

    'logging.level' => SimpleSAML\Logger::DEBUG,
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',

    'store.type' => 'phpsession',
    'session.phpsession.savepath' => $tb['work_dir'] . '/php-sessions',
    'session.phpsession.cookiename' => 'SimpleSAML',
    'session.cookie.name' => 'SimpleSAMLSessionID',
    'session.cookie.secure' => false,           // plain http on 127.0.0.1
    'session.cookie.samesite' => null,
    'language.cookie.secure' => false,
    'showerrors' => true,
    'errorreporting' => false,
    'admin.checkforupdates' => false,
];
