<?php
/*
 * The test IdP's users: a username/password form from the exampleauth module.
 * alice (analytics, staff) and bob (ops) are the everyday users; carol (admin, analytics, ops)
 * may open every app; zoe has a non-ASCII display name and 501 groups (analytics, g-000..g-499),
 * for the header filtering and encoding tests.
 */
$manyGroups = array_map(function ($i) { return sprintf('g-%03d', $i); }, range(0, 499));

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
        'carol:carol-pass' => [
            'uid' => ['carol'],
            'mail' => ['carol@example.test'],
            'displayName' => ['Carol Chief'],
            'groups' => ['admin', 'analytics', 'ops'],
        ],
        'zoe:zoe-pass' => [
            'uid' => ['zoe'],
            'mail' => ['zoe@partner.example'],
            'displayName' => ['Zoë Ångström'],
            'groups' => array_merge(['analytics'], $manyGroups),
        ],
    ],
];
