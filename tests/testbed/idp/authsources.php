<?php
/* The test IdP's users: a username/password form from the exampleauth module. */
$config = [
    'admin' => ['core:AdminPassword'],

    'example-userpass' => [
        'exampleauth:UserPass',
        'alice:alice-pass' => [
            'uid' => ['alice'],
            'mail' => ['alice@example.test'],
            'displayName' => ['Alice Analyst'],
            'groups' => ['analytics', 'staff'],
        ],
        'bob:bob-pass' => [
            'uid' => ['bob'],
            'mail' => ['bob@example.test'],
            'displayName' => ['Bob Builder'],
            'groups' => ['ops'],
        ],
    ],
];
